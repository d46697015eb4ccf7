"""`conceptseg serve` video sessions on a tiny random model with a tracker: upload, prompts, streamed
propagation, frames, YT-VIS results, limits, expiry and clients that leave mid-stream."""

import dataclasses
import io
import json
import threading

import numpy as np
import PIL.Image
import pytest
from fastapi.testclient import TestClient
from hf_reference import randomize_

from conceptseg import SAM3, tiny_config
from conceptseg.io.rle import decode_mask
from conceptseg.predict.video import VideoPredictor
from conceptseg.serve import ServeLimits, create_app

FRAMES = 5


@pytest.fixture(scope="module")
def model():
    return randomize_(SAM3(dataclasses.replace(tiny_config(), d_model=64)), seed=12).eval()


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(4)
    return [rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8) for _ in range(FRAMES)]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def open_video(client: TestClient, frames: list[np.ndarray]):
    return client.post("/v1/videos", files=[("frames", (f"{i}.png", png(f), "image/png")) for i, f in enumerate(frames)])


@pytest.fixture
def client(model):
    with TestClient(create_app(model, ServeLimits(max_sessions=2, max_video_frames=8))) as client:
        yield client


def lines(response) -> list[dict]:
    return [json.loads(line) for line in response.iter_lines() if line]


def test_a_session_streams_the_video_predictors_results(client, model, frames):
    opened = open_video(client, frames)
    assert opened.status_code == 201
    video = opened.json()
    assert (video["num_frames"], video["width"], video["height"]) == (FRAMES, 80, 64)
    video_id = video["video_id"]
    prompt = {"frame_index": 1, "points": [[30, 20]], "obj_id": 3}
    answer = client.post(f"/v1/videos/{video_id}/prompts", json=prompt).json()
    assert answer["object_ids"] == [3] and [o["id"] for o in answer["frame"]["objects"]] == [3]
    with client.stream("GET", f"/v1/videos/{video_id}/propagate") as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        streamed = lines(response)
    assert streamed[-1] == {"done": True, "frames": FRAMES - 1}
    with VideoPredictor(model).start(frames) as session:
        session.add_prompt(1, points=[[30, 20]], obj_id=3)
        expected = list(session.propagate())
    assert [line["frame_index"] for line in streamed[:-1]] == [frame.frame_index for frame in expected]
    for line, frame in zip(streamed, expected):
        assert [o["id"] for o in line["objects"]] == frame.object_ids.tolist()
        for obj, mask in zip(line["objects"], frame.masks):
            assert np.array_equal(decode_mask(obj["mask"], 64, 80), mask)
    results = client.get(f"/v1/videos/{video_id}/results").json()
    assert all(len(record["segmentations"]) == FRAMES for record in results)
    jpeg = client.get(f"/v1/videos/{video_id}/frames/2")
    assert jpeg.headers["content-type"] == "image/jpeg"
    decoded = np.asarray(PIL.Image.open(io.BytesIO(jpeg.content)), dtype=float)
    assert np.argmin([np.abs(decoded - frame).mean() for frame in frames]) == 2  # JPEG is lossy: the nearest
    assert client.delete(f"/v1/videos/{video_id}").status_code == 204
    assert client.post(f"/v1/videos/{video_id}/prompts", json={"text": "cat"}).status_code == 404


def test_concept_prompts_and_bad_prompts(client, frames):
    video_id = open_video(client, frames).json()["video_id"]
    assert client.post(f"/v1/videos/{video_id}/prompts", json={"text": "cat"}).json()["frame"] is None
    for body, message in [({"frame_index": 9, "text": "cat"}, "outside the video"),
                          ({"points": [[1, 1]]}, "obj_id"),
                          ({"frame_index": -1, "text": "cat"}, "frame_index"),
                          ({"text": "cat", "obj_id": 1}, "without obj_id")]:
        answer = client.post(f"/v1/videos/{video_id}/prompts", json=body)
        assert answer.status_code == 422 and message in answer.json()["detail"]
    assert client.get(f"/v1/videos/{video_id}/results").status_code == 404  # nothing propagated yet
    assert client.get(f"/v1/videos/{video_id}/frames/{FRAMES}").status_code == 404
    assert client.get(f"/v1/videos/{video_id}/propagate", params={"direction": "sideways"}).status_code == 422


def test_upload_limits(client, frames):
    too_long = open_video(client, frames * 2)
    assert too_long.status_code == 413 and "max_video_frames" in too_long.json()["detail"]
    broken = client.post("/v1/videos", files=[("frames", ("a.png", png(frames[0]), "image/png")),
                                              ("frames", ("b.png", b"not an image", "image/png"))])
    assert broken.status_code == 422 and "b.png" in broken.json()["detail"]
    mixed = client.post("/v1/videos", files=[("frames", ("a.png", png(frames[0]), "image/png")),
                                             ("frames", ("b.png", png(frames[0][:32]), "image/png"))])
    assert mixed.status_code == 422 and "same size" in mixed.json()["detail"]
    not_a_video = client.post("/v1/videos", files={"file": ("clip.mp4", b"\x00" * 100, "video/mp4")})
    assert not_a_video.status_code == 422
    assert client.post("/v1/videos").status_code == 422
    assert client.get("/v1/health").json()["videos"] == 0  # nothing half-open left behind


def test_session_count_limit_and_idle_expiry(client, frames):
    first, second = (open_video(client, frames).json()["video_id"] for _ in range(2))
    third = open_video(client, frames)
    assert third.status_code == 429 and "max_sessions" in third.json()["detail"]
    store = client.app.state.server.videos
    now = store.clock()
    store.clock = lambda: now + store.idle_seconds + 1
    expired = client.post(f"/v1/videos/{first}/prompts", json={"text": "cat"})
    assert expired.status_code == 410 and "expired" in expired.json()["detail"]
    assert store.expire_idle() == 1 and len(store) == 0  # the second one, swept
    assert client.post(f"/v1/videos/{second}/prompts", json={"text": "cat"}).status_code == 410
    assert open_video(client, frames).status_code == 201


def test_a_client_leaving_mid_stream_frees_the_session(client, frames):
    video_id = open_video(client, frames).json()["video_id"]
    client.post(f"/v1/videos/{video_id}/prompts", json={"points": [[30, 20]], "obj_id": 1})
    with client.stream("GET", f"/v1/videos/{video_id}/propagate") as response:
        first = json.loads(next(response.iter_lines()))
        assert first["frame_index"] == 0
        busy = client.post(f"/v1/videos/{video_id}/prompts", json={"text": "cat"})
        assert busy.status_code == 409 and "propagating" in busy.json()["detail"]
    for _ in range(200):  # the stream's clean-up runs in the worker pool
        if client.get("/v1/health").json()["busy"] == 0 and not client.app.state.server.videos.get(video_id).streaming:
            break
        threading.Event().wait(0.05)
    with client.stream("GET", f"/v1/videos/{video_id}/propagate") as response:
        assert lines(response)[-1] == {"done": True, "frames": FRAMES}
    assert client.delete(f"/v1/videos/{video_id}").status_code == 204
    assert client.get("/v1/health").json()["videos"] == 0


def test_a_model_without_tracker_refuses_videos(frames):
    model = SAM3(tiny_config())
    model.missing_components = ("tracker",)
    with TestClient(create_app(model)) as client:
        answer = open_video(client, frames)
        assert answer.status_code == 422 and "tracker" in answer.json()["detail"]
