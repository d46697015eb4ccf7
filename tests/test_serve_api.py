"""`conceptseg serve` API on tiny random models: every endpoint, every limit, and one clear 4xx per bad
request while the server keeps serving."""

import dataclasses
import io
import struct
import threading
import zlib

import numpy as np
import PIL.Image
import pytest
from fastapi.testclient import TestClient
from hf_reference import randomize_

from conceptseg import SAM3, tiny_config
from conceptseg.io.rle import decode_mask
from conceptseg.predict.image import ImagePredictor
from conceptseg.serve import ServeLimits, create_app


@pytest.fixture(scope="module")
def model():
    model = randomize_(SAM3(tiny_config()), seed=11).eval()
    model.missing_components = ("tracker",)  # as the embedded model: concept segmentation only
    return model


@pytest.fixture(scope="module")
def tracker_model():
    model = randomize_(SAM3(dataclasses.replace(tiny_config(), d_model=64)), seed=12).eval()
    return model


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def picture(seed: int = 0, size: tuple[int, int] = (90, 130)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's header)."""
    data = bytearray(png(picture(size=(4, 4))))
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


def upload(client: TestClient, content: bytes, name: str = "x.png"):
    return client.post("/v1/images", files={"file": (name, content, "image/png")})


@pytest.fixture
def client(model):
    with TestClient(create_app(model, ServeLimits(max_upload_bytes=200_000, max_image_side=1000),
                               model_name="tiny")) as client:
        yield client


def test_health_model_page_and_openapi(client):
    assert client.get("/v1/health").json()["status"] == "ok"
    info = client.get("/v1/model").json()
    assert info["name"] == "tiny" and info["input_size"] == tiny_config().vit.image_size
    assert info["prompts"]["text"] and not info["prompts"]["video"]  
    assert "<canvas" in client.get("/").text and client.get("/app.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/images", "/v1/images/{image_id}/segment", "/v1/videos/{video_id}/propagate"} <= set(paths)


def test_segment_gives_the_predictors_results_as_rle(client, model):
    image = picture()
    image_id = upload(client, png(image)).json()["image_id"]
    body = {"text": "cat", "boxes": [[10, 10, 60, 50]], "box_labels": [1], "threshold": 0.0}
    answer = client.post(f"/v1/images/{image_id}/segment", json=body)
    assert answer.status_code == 200
    predictor = ImagePredictor(model)
    predictor.set_image(image)
    expected = predictor.predict("cat", boxes=[[10, 10, 60, 50]], box_labels=[1], threshold=0.0)
    instances = answer.json()["instances"]
    assert len(instances) == len(expected) > 0
    for instance, mask, box, score in zip(instances, expected.masks, expected.boxes, expected.scores):
        assert np.array_equal(decode_mask(instance["mask"], 90, 130), mask)
        assert np.allclose(instance["box"], box, atol=0.01) and abs(instance["score"] - score) < 1e-4
    coco = client.post(f"/v1/images/{image_id}/segment", json=body | {"format": "coco"}).json()
    assert coco["categories"] == [{"id": 1, "name": "cat"}] and len(coco["annotations"]) == len(expected)
    assert coco["images"][0] == {"id": 1, "file_name": "x.png", "height": 90, "width": 130}


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"this is not an image", "not an image"),
    (png(picture())[:150], "truncated"),
    (png_claiming(100_000, 100_000), "pixels"),
    (png_claiming(7_000, 7_000), "over the limit of 40,000,000"),
    (png(picture(size=(20, 1200))), "1000 pixels a side"),
])
def test_bad_uploads_get_one_clear_422(client, content, message):
    answer = upload(client, content)
    assert answer.status_code == 422 and message in answer.json()["detail"]
    assert client.get("/v1/health").status_code == 200


def test_an_upload_over_the_byte_limit_is_413(client):
    answer = upload(client, bytes(300_000))
    assert answer.status_code == 413 and "max_upload_bytes" in answer.json()["detail"]


@pytest.mark.parametrize("body, status, message", [
    ("{not json", 400, "not valid JSON"),
    ({"boxes": [[1, 2, 3]]}, 422, "boxes.0"),
    ({"boxes": [[500, 500, 600, 600]]}, 422, "no area inside"),
    ({"points": [[-5, 10]]}, 422, "outside"),
    ({"text": "cat", "threshold": 2}, 422, "threshold"),
    ({"text": "cat", "colour": "red"}, 422, "colour"),
    ({"text": "x" * 300}, 422, "max_text_length"),
    ({"points": [[1, 1]] * 65}, 422, "max_prompts"),
    ({"box_labels": [1]}, 422, ""),
    ({"boxes": [[1, 1, 20, 20]], "box_labels": [2]}, 422, "box_labels"),
])
def test_bad_segment_requests_get_one_clear_4xx(client, body, status, message):
    image_id = upload(client, png(picture())).json()["image_id"]
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, str) else {"json": body}
    answer = client.post(f"/v1/images/{image_id}/segment", **kwargs)
    assert answer.status_code == status and message in answer.json()["detail"]
    assert client.post(f"/v1/images/{image_id}/segment", json={"text": "cat"}).status_code == 200


def test_unknown_images_are_404_and_the_cache_drops_the_least_recently_used(model):
    with TestClient(create_app(model, ServeLimits(max_images=2))) as client:
        assert client.post("/v1/images/nope/segment", json={"text": "cat"}).status_code == 404
        first, second = (upload(client, png(picture(seed))).json()["image_id"] for seed in (1, 2))
        assert client.post(f"/v1/images/{first}/segment", json={"text": "cat"}).status_code == 200  # first is recent
        third = upload(client, png(picture(3))).json()["image_id"]
        codes = {key: client.post(f"/v1/images/{key}/segment", json={"text": "cat"}).status_code
                 for key in (first, second, third)}
        assert codes == {first: 200, second: 404, third: 200}
        assert client.get("/v1/health").json()["images"] == 2


def test_the_cache_is_bounded_in_bytes(model):
    predictor = ImagePredictor(model)
    predictor.set_image(picture())
    one = predictor.cached_bytes
    with TestClient(create_app(model, ServeLimits(max_cache_bytes=int(2.5 * one)))) as client:
        for seed in range(4):
            assert upload(client, png(picture(seed))).status_code == 201
        stats = client.get("/v1/health").json()
        assert stats["images"] == 2 and stats["image_cache_bytes"] <= 2.5 * one
    with TestClient(create_app(model, ServeLimits(max_cache_bytes=one // 2))) as client:
        answer = upload(client, png(picture()))
        assert answer.status_code == 413 and "max_cache_bytes" in answer.json()["detail"]


def test_instance_segmentation_needs_a_tracker_and_matches_the_predictor(client, model, tracker_model):
    image_id = upload(client, png(picture())).json()["image_id"]
    answer = client.post(f"/v1/images/{image_id}/instance", json={"points": [[40, 30]]})
    assert answer.status_code == 422 and "tracker" in answer.json()["detail"]
    with TestClient(create_app(tracker_model)) as tracked:
        image_id = upload(tracked, png(picture())).json()["image_id"]
        body = {"points": [[40, 30], [90, 60]], "point_labels": [1, 0], "box": [10, 10, 80, 70], "multimask": False}
        answer = tracked.post(f"/v1/images/{image_id}/instance", json=body)
        assert answer.status_code == 200
        predictor = ImagePredictor(tracker_model)
        predictor.set_image(picture())
        expected = predictor.predict_instance([[40, 30], [90, 60]], [1, 0], [10, 10, 80, 70], multimask=False)
        (instance,) = answer.json()["instances"]
        assert np.array_equal(decode_mask(instance["mask"], 90, 130), expected.masks[0])
        assert tracked.post(f"/v1/images/{image_id}/instance", json={"box": [1, 2]}).status_code == 422


def test_health_answers_while_the_model_is_busy(client):
    image_id = upload(client, png(picture())).json()["image_id"]
    image = client.app.state.server.images.get(image_id)
    release, entered = threading.Event(), threading.Event()
    original = image.predictor.predict

    def slow_predict(*args, **kwargs):
        entered.set()
        release.wait(10)
        return original(*args, **kwargs)

    image.predictor.predict = slow_predict
    worker = threading.Thread(target=lambda: client.post(f"/v1/images/{image_id}/segment", json={"text": "cat"}))
    worker.start()
    assert entered.wait(10)
    assert client.get("/v1/health").json()["busy"] == 1
    release.set()
    worker.join(10)
    assert client.get("/v1/health").json()["busy"] == 0


def test_a_full_queue_is_503_and_a_slow_call_504(model):
    with TestClient(create_app(model, ServeLimits(max_queued=1, request_timeout_seconds=0.2))) as client:
        image_id = upload(client, png(picture())).json()["image_id"]
        image = client.app.state.server.images.get(image_id)
        release = threading.Event()
        original = image.predictor.predict
        image.predictor.predict = lambda *args, **kwargs: release.wait(10) and original(*args, **kwargs)
        answer = client.post(f"/v1/images/{image_id}/segment", json={"text": "cat"})
        assert answer.status_code == 504 and "did not answer" in answer.json()["detail"]
        busy = client.post(f"/v1/images/{image_id}/segment", json={"text": "cat"})  # the first still runs
        assert busy.status_code == 503 and "busy" in busy.json()["detail"]
        release.set()
        image.predictor.predict = original
        for _ in range(100):
            if client.get("/v1/health").json()["busy"] == 0:
                break
            threading.Event().wait(0.05)
        assert client.post(f"/v1/images/{image_id}/segment", json={"text": "cat"}).status_code == 200
