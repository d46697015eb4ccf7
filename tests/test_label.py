"""`conceptseg label` on generated concept-world images with the embedded model: the local and Ray engines give
the same Parquet contents, errors are logged per item, a killed run resumes to the uninterrupted output, and a
Ray model worker killed mid-run loses and doubles nothing."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_utils

from conceptseg.cli import main
from conceptseg.data.synthetic import ConceptWorld
from conceptseg.io.saco_image import read_image_gt
from conceptseg.label import LabelSettings, RayOptions, label
from conceptseg.label.sources import Item, list_items, parse_concepts

NUM_IMAGES = 50
CONCEPTS = ("circle", "triangle", "red square")
SETTINGS = LabelSettings(threads=1)  # Ray workers run one torch thread each: the same arithmetic everywhere


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """50 concept-world scenes (square and non-square) and one corrupt file among them."""
    folder = tmp_path_factory.mktemp("images")
    for index in range(NUM_IMAGES):
        size = 224 if index % 5 else (288, 216)
        PIL.Image.fromarray(ConceptWorld(size=size, split="test", seed=31).sample(index).image).save(
            folder / f"scene_{index:03d}.png")
    (folder / "scene_025b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


@pytest.fixture(scope="module")
def local_run(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    label([str(images)], CONCEPTS, out, settings=SETTINGS, shard_size=8, output_format="coco", progress=False)
    return out


def table(out: Path) -> list[dict]:
    return pq.read_table(out / "shards").sort_by([("item_index", "ascending")]).to_pylist()


@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray")
    yield
    ray.shutdown()


def test_local_run_labels_every_image_and_logs_the_corrupt_one(local_run, images):
    rows = table(local_run)
    manifest = json.loads((local_run / "manifest.json").read_text())
    assert manifest["counts"]["items"] == NUM_IMAGES + 1 and manifest["counts"]["labelled"] == NUM_IMAGES
    assert manifest["counts"]["instances"] == len(rows) >= 20
    assert set(manifest["counts"]["instances_per_concept"]) == set(CONCEPTS)
    errors = [json.loads(line) for line in (local_run / "errors.jsonl").read_text().splitlines()]
    assert [Path(error["item"]).name for error in errors] == ["scene_025b.png"]
    assert "scene_025b.png" in errors[0]["error"] and "image" in errors[0]["error"]
    # rows: one per (item, concept, instance); masks decode to the image size, around the predicted boxes
    keys = [(row["item_index"], row["concept"], row["instance"]) for row in rows]
    assert len(set(keys)) == len(keys)
    for row in rows[:20]:
        mask = mask_utils.decode({"size": [row["height"], row["width"]], "counts": row["mask"].encode()})
        ys, xs = np.nonzero(mask)
        x1, y1, x2, y2 = row["box"]
        assert x1 <= xs.mean() <= x2 and y1 <= ys.mean() <= y2 and row["model"] == "embedded"
    # the image pipeline's answer, item for item
    from conceptseg import ImagePredictor, load_model

    predictor = ImagePredictor(load_model())
    first = next(row for row in rows if row["item_index"] == 3)
    predictor.set_image(first["item"])
    expected = predictor.predict(text=first["concept"])
    assert np.array_equal(
        mask_utils.decode({"size": [first["height"], first["width"]], "counts": first["mask"].encode()}),
        expected.masks[first["instance"]],
    )
    # the COCO file assembled from the shards
    coco = json.loads((local_run / "labels_coco.json").read_text())
    assert len(coco["images"]) == NUM_IMAGES and len(coco["annotations"]) == len(rows)
    assert [c["name"] for c in coco["categories"]] == list(CONCEPTS)


@pytest.fixture
def ray_head():
    """A Ray cluster started apart (`ray start --head`), on loopback only; its address."""
    pytest.importorskip("ray")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # single-machine mode: loopback addresses
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    subprocess.run([*ray_cli, "start", "--head", "--port", str(port), "--num-cpus", "3", "--include-dashboard",
                    "false", "--disable-usage-stats"], env=env, check=True, capture_output=True)
    yield f"127.0.0.1:{port}", env | {"RAY_AUTH_MODE": "token"}  # `ray start` turns token auth on
    subprocess.run([*ray_cli, "stop"], env=env, capture_output=True)


def test_ray_engine_on_a_cluster_gives_the_local_engine_output(local_run, images, tmp_path, ray_head):
    address, env = ray_head
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "conceptseg.cli", "label", str(images), "--concepts", ",".join(CONCEPTS),
               "--out", str(out), "--shard-size", "8", "--format", "coco", "--engine", "ray", "--address", address,
               "--workers", "2", "--worker-cpus", "1"]
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert table(out) == table(local_run)
    assert (out / "errors.jsonl").read_text() == (local_run / "errors.jsonl").read_text()
    assert (out / "labels_coco.json").read_text() == (local_run / "labels_coco.json").read_text()
    assert json.loads((out / "manifest.json").read_text())["run"]["ray"]["address"] == address


def test_a_killed_ray_worker_loses_and_doubles_nothing(local_run, images, tmp_path, ray_cluster):
    out = tmp_path / "ray_killed"
    errors = []

    def run():
        try:
            label([str(images)], CONCEPTS, out, settings=SETTINGS, engine="ray", batch_size=1, shard_size=4,
                  ray_options=RayOptions(workers=1, worker_cpus=1), progress=False)
        except Exception as error:  # reported by the main thread
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        workers = _processes("RayLabeller")
        if workers and len(list((out / "shards").glob("*.parquet"))) >= 2:
            os.kill(workers[0], signal.SIGKILL)
            killed = len(list((out / "shards").glob("*.parquet")))
        time.sleep(0.05)
    thread.join(timeout=300)
    assert not errors and not thread.is_alive()
    assert killed is not None and killed < 13, "the worker was not killed mid-run"
    assert table(out) == table(local_run)


def _processes(name: str) -> list[int]:
    """Pids of Ray worker processes whose title names `name` (Ray titles an actor's process by its class)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
            if title.startswith(b"ray::") and name.encode() in title:
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_a_local_run_killed_midway_resumes_to_the_uninterrupted_output(local_run, images, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "conceptseg.cli", "label", str(images), "--concepts", ",".join(CONCEPTS),
               "--out", str(out), "--shard-size", "8", "--batch-size", "1", "--threads", "1", "--quiet",
               "--format", "coco"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list((out / "shards").glob("*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 2 <= len(list((out / "shards").glob("*.parquet"))) < 7
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "shards kept from an earlier run" in rerun.stdout
    assert table(out) == table(local_run)
    assert (out / "labels_coco.json").read_text() == (local_run / "labels_coco.json").read_text()
    assert not list((out / "shards").glob(".*"))  # no temporary files left


def test_a_run_with_other_arguments_is_refused_and_a_finished_one_is_kept(local_run, images, capsys):
    before = {path.name: path.stat().st_mtime_ns for path in (local_run / "shards").iterdir()}
    argv = ["label", str(images), "--concepts", ",".join(CONCEPTS), "--out", str(local_run), "--shard-size", "8"]
    assert main([*argv[:3], "red circle", *argv[4:]]) == 2
    assert "concepts" in capsys.readouterr().err
    assert main([*argv, "--threshold", "0.6"]) == 2
    assert "threshold" in capsys.readouterr().err
    assert main([*argv, "--format", "saco", "--quiet"]) == 0
    assert "7 of 7 shards kept" in capsys.readouterr().out
    assert {path.name: path.stat().st_mtime_ns for path in (local_run / "shards").iterdir()} == before
    pairs = read_image_gt(local_run / "labels_saco.json")
    assert len(pairs) == NUM_IMAGES * len(CONCEPTS)
    assert sum(len(pair.instances) for pair in pairs.values()) == len(table(local_run))


def test_sources_folders_globs_and_manifests(tmp_path):
    for name in ("a.png", "sub/b.jpg", "sub/.hidden/c.png", "notes.txt", "clip.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.csv").write_text('path,concepts\na.png,"cat, dog"\nsub/b.jpg,\n')
    (tmp_path / "list.jsonl").write_text(json.dumps({"path": str(tmp_path / "a.png"), "concepts": ["fish"]}) + "\n")
    items = list_items([str(tmp_path)], ["car"])
    assert [(Path(i.path).relative_to(tmp_path).as_posix(), i.kind) for i in items] == [
        ("a.png", "image"), ("clip.mp4", "video"), ("sub/b.jpg", "image")]
    assert list_items([str(tmp_path / "list.csv")], ["car"]) == [
        Item(0, str(tmp_path / "a.png"), "image", ("cat", "dog")), Item(1, str(tmp_path / "sub/b.jpg"), "image", ("car",))]
    assert list_items([str(tmp_path / "list.jsonl"), str(tmp_path / "*.png")], ["car"])[0].concepts == ("fish",)
    assert len(list_items([str(tmp_path / "*.png"), str(tmp_path / "a.png")], ["car"])) == 1  # each file once
    assert parse_concepts(" a, b ,,a") == ("a", "b")
    with pytest.raises(ValueError, match="no concepts"):
        list_items([str(tmp_path / "a.png")], [])
    with pytest.raises(ValueError, match="does not exist"):
        list_items([str(tmp_path / "missing")], ["car"])
    with pytest.raises(ValueError, match="no files match"):
        list_items([str(tmp_path / "*.gif")], ["car"])


def test_videos_are_labelled_as_masklets_and_a_broken_one_is_an_error(tmp_path):
    from conceptseg.io.overlay import VideoWriter

    clip = ConceptWorld(size=224, split="test", seed=3).video(0, num_frames=6)
    writer = VideoWriter(tmp_path / "clip.mp4", 10.0, clip.frames.shape[1:3])
    for frame in clip.frames:
        writer.write(frame)
    writer.close()
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    assert main(["label", str(tmp_path / "clip.mp4"), str(tmp_path / "broken.mp4"), "--concepts", clip.phrase,
                 "--out", str(out), "--max-frames", "4", "--quiet"]) == 0
    rows = table(out)
    assert rows and all(row["kind"] == "video" and row["mask"] is None for row in rows)
    assert all(set(row["frames"]) <= set(range(4)) and len(row["frame_masks"]) == len(row["frames"]) for row in rows)
    errors = (out / "errors.jsonl").read_text()
    assert "broken.mp4" in errors and "clip.mp4" not in errors
