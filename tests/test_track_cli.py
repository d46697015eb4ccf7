"""`conceptseg track` end to end on a folder of frames and a tiny random model with tracker weights."""

import dataclasses
import json

import numpy as np
import PIL.Image
import pytest
from hf_reference import randomize_

import conceptseg
import conceptseg.cli
from conceptseg import SAM3, tiny_config
from conceptseg.io.saco_video import VideoPair, read_video_predictions
from conceptseg.io.video import open_frames

NUM_FRAMES = 6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = randomize_(SAM3(dataclasses.replace(tiny_config(), d_model=64)), seed=5).eval()
    return conceptseg.save_model(model, tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for index in range(NUM_FRAMES):
        PIL.Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


def test_track_writes_ytvis_results_masks_and_an_overlay(model_dir, frames_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["track", str(frames_dir), "--text", "red circle", "--object-point", "7,1,30,20",
            "--object-box", "9,2,5,5,40,30", "--model", str(model_dir), "--out", str(out), "--save-masks",
            "--hotstart-delay", "2"]
    assert conceptseg.cli.main(argv) == 0
    records = json.loads((out / "results.json").read_text())
    pair = VideoPair(1, 0, "object", NUM_FRAMES, 48, 64)
    read = read_video_predictions(records, {(1, 0): pair} | {(1, 1): dataclasses.replace(pair, category_id=1)})
    assert all(len(masklet.masks) == NUM_FRAMES for masklets in read.values() for masklet in masklets)
    overlay = open_frames(out / "overlay.mp4")
    assert [index for index, _ in overlay] == list(range(NUM_FRAMES)) and overlay.size == (48, 64)
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(NUM_FRAMES)]


@pytest.mark.parametrize(("argv", "message"), [
    (["--text", "x", "--max-frames", "0"], "--max-frames must be >= 1"),
    (["--object-point", "1,2,3"], "expected ID,F,X,Y"),
    (["--box", "0,1,2"], "expected F,X1,Y1,X2,Y2"),
    ([], "give at least one"),
    (["--object-point", "1,50,3,3"], "frame 50 is outside the video"),
])
def test_bad_arguments_are_one_line_errors(model_dir, frames_dir, tmp_path, capsys, argv, message):
    code = conceptseg.cli.main(["track", str(frames_dir), "--model", str(model_dir), "--out", str(tmp_path), *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_the_embedded_model_tracks_and_a_model_without_tracker_says_it_cannot(frames_dir, tmp_path, capsys):
    assert conceptseg.cli.main(["track", str(frames_dir), "--text", "star", "--out", str(tmp_path / "embedded")]) == 0
    assert isinstance(json.loads((tmp_path / "embedded" / "results.json").read_text()), list)
    untracked = SAM3(tiny_config())
    untracked.missing_components = ("tracker",)
    model = conceptseg.save_model(untracked, tmp_path / "untracked")
    argv = ["track", str(frames_dir), "--text", "star", "--model", str(model), "--out", str(tmp_path / "none")]
    assert conceptseg.cli.main(argv) == 2
    assert "no tracker weights" in capsys.readouterr().err


def test_a_run_killed_halfway_leaves_no_partial_results(model_dir, frames_dir, tmp_path, monkeypatch):
    from conceptseg.predict.video_step import FrameStep

    run = FrameStep.run

    def interrupted(self, frame_index, image, reverse):
        if frame_index == 3:
            raise KeyboardInterrupt
        return run(self, frame_index, image, reverse)

    monkeypatch.setattr(FrameStep, "run", interrupted)
    out = tmp_path / "out"
    argv = ["track", str(frames_dir), "--object-point", "1,0,30,20", "--model", str(model_dir), "--out", str(out),
            "--hotstart-delay", "0"]
    with pytest.raises(KeyboardInterrupt):
        conceptseg.cli.main(argv)
    assert sorted(p.name for p in out.iterdir()) == []  # results.json and overlay.mp4 absent, no temp files
