"""The web page end to end in headless Chromium (Debian's `chromium`, driven by Playwright through its
executable path), on the embedded model: open a concept-world image, type a phrase, see the masks on the
canvas, draw an exemplar box, click a point, hide an instance. Screenshots go to $CONCEPTSEG_ARTIFACTS
(default: the test's tmp dir)."""

import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import PIL.Image
import pytest
import uvicorn

from conceptseg import load_model
from conceptseg.data import ConceptWorld
from conceptseg.io.rle import decode_mask
from conceptseg.serve import create_app

CHROMIUM = os.environ.get("CONCEPTSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("CONCEPTSEG_CI"):
    pytest.skip("no system Chromium (apt-get install chromium; .ci/run installs it and requires it)",
                allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


@pytest.fixture(scope="module")
def server_url():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(load_model(), model_name="embedded"), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def scene():
    """A concept-world test image whose phrase names two or more objects."""
    world = ConceptWorld(size=224, split="test", seed=11)
    return next(sample for sample in map(world.sample, range(200)) if len(sample.target_indices) >= 2)


@pytest.fixture(scope="module")
def picture(scene):
    """The scene at twice its size (pixel copies), large enough to see in the screenshots."""
    return scene.image.repeat(2, axis=0).repeat(2, axis=1)


def canvas_pixels(page) -> np.ndarray:
    """The canvas as shown: a screenshot of its pixel-snapped box."""
    box = page.locator("#view").bounding_box()
    clip = {"x": round(box["x"]), "y": round(box["y"]), "width": round(box["width"]), "height": round(box["height"])}
    return np.asarray(PIL.Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"), dtype=float)


def segment_request(page, action) -> dict:
    """Do `action`, wait for the page's /segment call and for its masks to be drawn; return the request body."""
    with page.expect_response(lambda response: response.url.endswith("/segment"), timeout=60_000) as answer:
        action()
    page.wait_for_function("document.getElementById('status').textContent.includes('instance(s)')")
    return answer.value.request.post_data_json


def test_phrase_box_and_click_update_the_masks(server_url, scene, picture, tmp_path):
    artifacts = Path(os.environ.get("CONCEPTSEG_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    image_path = tmp_path / "scene.png"
    PIL.Image.fromarray(picture).save(image_path)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(server_url)
        page.wait_for_function("document.getElementById('model-info').textContent.includes('px input')")
        page.set_input_files("#file", str(image_path))
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Type a phrase')")
        before = canvas_pixels(page)
        assert np.abs(before - picture).mean() < 1  # the image, drawn 1:1

        page.fill("#phrase", scene.phrase)
        assert segment_request(page, lambda: page.click("#segment")) == {"text": scene.phrase, "threshold": 0.5}
        items = page.locator("#instances li.instance")
        assert items.count() >= 1 and "score" in items.first.inner_text()
        page.screenshot(path=str(artifacts / "serve-page.png"))

        image_id = page.evaluate("state.id")
        answer = httpx.post(f"{server_url}/v1/images/{image_id}/segment", json={"text": scene.phrase}).json()
        masks = np.stack([decode_mask(i["mask"], 448, 448) for i in answer["instances"]])
        after = canvas_pixels(page)
        change = np.abs(after - before).sum(-1)
        assert change[masks.any(0)].mean() > 20  # masked pixels are tinted
        assert change[~masks.any(0)].max() == 0  # and nothing else changed

        page.locator("#instances li.instance input").first.uncheck()  # hide the best instance
        hidden = np.abs(canvas_pixels(page) - before).sum(-1)
        others = masks[1:].any(0)
        assert hidden[masks[0] & ~others].max() == 0
        assert len(masks) == 1 or hidden[others].mean() > 20

        box = page.locator("#view").bounding_box()
        x1, y1, x2, y2 = (2 * float(v) for v in scene.boxes[0])
        page.mouse.move(box["x"] + x1, box["y"] + y1)
        page.mouse.down()
        page.mouse.move(box["x"] + x2, box["y"] + y2, steps=5)
        drawn = segment_request(page, page.mouse.up)
        assert drawn["text"] == scene.phrase and drawn["box_labels"] == [1]
        assert np.allclose(drawn["boxes"][0], [x1, y1, x2, y2], atol=2)

        page.check("input[name=tool][value='point-']")
        clicked = segment_request(page, lambda: page.mouse.click(box["x"] + 5, box["y"] + 5))
        assert clicked["points"] == [[5, 5]] and clicked["point_labels"] == [0] and len(clicked["boxes"]) == 1
        page.locator("#view").screenshot(path=str(artifacts / "serve-canvas.png"))
        browser.close()
