"""`conceptseg demo --video` on a tiny random model: a readable overlay MP4 and YT-VIS results."""

import dataclasses
import json
import sys

import pytest
import torch

from conceptseg import SAM3, tiny_config
from conceptseg.cli import main
from conceptseg.predict import cli
from conceptseg.predict.demo_video import allow_untrained_tracker

FRAMES = 6


def tiny_model() -> SAM3:
    return SAM3(dataclasses.replace(tiny_config(), d_model=64))  # the tracker needs a width >= 64


def test_demo_video_writes_a_readable_mp4_and_results(tmp_path, monkeypatch, capsys):
    av = pytest.importorskip("av")
    monkeypatch.setattr(cli, "demo_model", tiny_model)
    assert main(["demo", "--video", "--out", str(tmp_path), "--frames", str(FRAMES), "--seed", "3"]) == 0
    with av.open(str(tmp_path / "overlay.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == FRAMES and frames[0].shape == (224, 224, 3)
    results = json.loads((tmp_path / "results.json").read_text())
    assert isinstance(results, list)
    assert all(len(record["segmentations"]) == FRAMES for record in results)
    out = capsys.readouterr().out
    assert "tracked \"" in out and "overlay.mp4" in out


def test_demo_video_warns_when_the_tracker_is_untrained(tmp_path, monkeypatch):
    pytest.importorskip("av")

    def untrained() -> SAM3:
        model = tiny_model()
        model.missing_components = ("tracker",)
        return model

    monkeypatch.setattr(cli, "demo_model", untrained)
    with pytest.warns(UserWarning, match="no trained tracker"):
        assert main(["demo", "--video", "--out", str(tmp_path), "--frames", "2"]) == 0
    assert (tmp_path / "overlay.mp4").exists() and (tmp_path / "results.json").exists()


def test_demo_video_without_pyav_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    monkeypatch.setattr(cli, "demo_model", lambda: pytest.fail("the model must not load without PyAV"))
    assert main(["demo", "--video", "--out", str(tmp_path)]) == 2
    assert "conceptseg[video]" in capsys.readouterr().err


def test_allow_untrained_tracker_gives_seeded_weights_and_leaves_the_rng_alone():
    first, second = tiny_model(), tiny_model()
    for model in (first, second):
        model.missing_components = ("tracker", "detector_points")
        for parameter in model.tracker.parameters():
            parameter.data.zero_()
    state = torch.random.get_rng_state()
    assert allow_untrained_tracker(first) and allow_untrained_tracker(second)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first.missing_components == ("detector_points",)
    weights = [p for p in first.tracker.parameters() if p.dim() > 1]
    assert any(p.abs().sum() > 0 for p in weights)
    assert all(torch.equal(a, b) for a, b in zip(first.tracker.parameters(), second.tracker.parameters()))
    assert not allow_untrained_tracker(first)  # a model with tracker weights is left as it is
