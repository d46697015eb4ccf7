"""Tracker training: prompts and corrections, frozen parts, overfitting, exact resume, saved model, CLI."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import conceptseg.cli
from conceptseg import SAM3, load_model, save_model, tiny_config
from conceptseg.data.synthetic import ConceptWorld
from conceptseg.model.rope import apply_rope, axial_rope_angles
from conceptseg.predict.video_settings import VideoSettings
from conceptseg.predict.video_step import FrameStep
from conceptseg.train.tracker_data import (
    TrackerPromptSampling,
    TrackerSource,
    correction_clicks,
    mask_box,
)
from conceptseg.train.tracker_trainer import (
    TrackerTrainConfig,
    TrackerTrainer,
    frame_losses,
    initialize_tracker,
    tracker_features,
    tracker_state,
)
from conceptseg.train.trainer import CHECKPOINT_FILE, LOG_FILE, MODEL_DIR, load_checkpoint

WORLD_SIZE, FRAMES = 64, 4
# the tiny config at 56 px with 64-d features: object pointers must split into the 64-d memory tokens
CONFIG = dataclasses.replace(tiny_config(image_size=56), d_model=64)


def untracked_model() -> SAM3:
    """A tiny model whose checkpoint carried no tracker, like the embedded model."""
    torch.manual_seed(0)
    model = SAM3(CONFIG)
    model.missing_components = ("tracker",)
    return model


def source(seed: int = 0, **sampling) -> TrackerSource:
    world = ConceptWorld(size=WORLD_SIZE, seed=seed)
    return TrackerSource(world, TrackerPromptSampling(**sampling), seed, FRAMES)


def config(**changes) -> TrackerTrainConfig:
    base = TrackerTrainConfig(steps=4, batch_size=2, num_frames=FRAMES, warmup_steps=1, save_every=1000)
    return dataclasses.replace(base, **changes)


class Cycle:
    """The first `count` examples of a source, over and over (overfitting)."""

    def __init__(self, inner: TrackerSource, count: int) -> None:
        self.inner, self.count = inner, count

    def example(self, position: int):
        return self.inner.example(position % self.count)


@pytest.mark.parametrize("kind, sampling", [("mask", dict(mask_fraction=1.0)),
                                            ("box", dict(mask_fraction=0.0, box_fraction=1.0)),
                                            ("clicks", dict(mask_fraction=0.0, box_fraction=0.0))])
def test_prompts_are_deterministic_and_drawn_from_the_ground_truth(kind, sampling):
    for position in range(6):
        example, again = source(**sampling).example(position), source(**sampling).example(position)
        for a, b in ((example.frames, again.frames), (example.masks, again.masks),
                     (example.prompt.points, again.prompt.points), (example.prompt.box, again.prompt.box)):
            assert np.array_equal(a, b)
        assert example.correction_frames == again.correction_frames and example.key == again.key
        first = example.masks[0]
        assert example.prompt.kind == kind and first.sum() >= 0.002 * WORLD_SIZE**2
        if kind == "mask":
            assert np.array_equal(example.prompt.mask, first)
        elif kind == "box":
            assert np.array_equal(example.prompt.box, mask_box(first))
        else:
            assert 1 <= len(example.prompt.points) <= 3 and (example.prompt.point_labels == 1).all()
            assert all(first[int(y), int(x)] for x, y in example.prompt.points)
        shown = example.masks.any(axis=(1, 2))
        assert all(0 < t < FRAMES and shown[t] for t in example.correction_frames)


def test_mask_boxes_are_the_concept_worlds_boxes():
    clip = ConceptWorld(size=WORLD_SIZE, seed=0).video(3, num_frames=FRAMES)
    for masks, boxes in zip(clip.instance_masks, clip.instance_boxes):
        for mask, box in zip(masks, boxes):
            if mask.any():
                assert np.array_equal(mask_box(mask), box)


def test_correction_clicks_land_in_the_error_region():
    rng = np.random.default_rng(0)
    target = np.zeros((32, 32), dtype=bool)
    target[8:24, 8:24] = True
    for _ in range(50):
        predicted = np.zeros_like(target)
        x0, y0 = rng.integers(0, 20, 2)
        predicted[y0 : y0 + 12, x0 : x0 + 12] = True
        seed = int(rng.integers(1000))
        clicks = correction_clicks(target, predicted, np.random.default_rng(seed))
        again = correction_clicks(target, predicted, np.random.default_rng(seed))
        assert np.array_equal(clicks.points, again.points)
        (x, y), label = clicks.points[-1].astype(int), clicks.point_labels[-1]
        # in the error region: positive where the object was missed, negative where the prediction spills
        assert target[y, x] != predicted[y, x] and label == target[y, x]
        if label == 0:  # a prompt alone must say which object: a positive click inside it comes first
            (px, py), = clicks.points[:1].astype(int)
            assert clicks.point_labels.tolist() == [1, 0] and target[py, px]
    perfect = correction_clicks(target, target, np.random.default_rng(0))  # no error: a click in the object
    (x, y), = perfect.points.astype(int)
    assert perfect.point_labels.tolist() == [1] and target[y, x]


def test_training_features_are_the_video_loops():
    model = untracked_model().eval()
    example = source().example(0)
    levels = tracker_features(model, example.frames)
    step = FrameStep(model, VideoSettings(), text_cache=None)
    for t in (0, FRAMES - 1):
        for ours, loops in zip(levels, model.tracker_features(step._trunk(example.frames[t]))):
            torch.testing.assert_close(ours[t : t + 1], loops, rtol=1e-4, atol=1e-5)


def test_only_the_tracker_and_its_neck_change(tmp_path):
    model = untracked_model()
    trainer = TrackerTrainer(model, source(), config(steps=2), tmp_path)
    assert model.missing_components == ()  # a fresh tracker and the detector's neck to train from
    neck, tracker_neck = model.backbone.neck.state_dict(), model.backbone.tracker_neck.state_dict()
    assert all(torch.equal(value, tracker_neck[key]) for key, value in neck.items())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.run(progress=False)
    after = model.state_dict()
    trained = set(tracker_state(model))
    assert all(torch.equal(before[k], after[k]) for k in before if k not in trained)
    changed = [k for k in trained if not torch.equal(before[k], after[k])]
    assert any(k.startswith("tracker.") for k in changed)
    assert any(k.startswith("backbone.tracker_neck.") for k in changed)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trained)


def test_overfitting_two_clips_lowers_the_loss(tmp_path):
    cfg = config(steps=24, lr=3e-3, warmup_steps=2, decay_fraction=0.0)
    TrackerTrainer(untracked_model(), Cycle(source(), 2), cfg, tmp_path).run(progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert len(losses) == 24 and np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4]), losses


def same_place_attention(layer, grid: int = 8) -> torch.Tensor:
    """Mean attention weight of each query of `layer`'s memory cross-attention on the key at its own grid
    cell, for random current-frame tokens and one random memory frame."""
    attention = layer.cross_attn_image
    tokens = torch.randn(1, grid * grid, attention.q_proj.in_features)
    memory = torch.randn(1, grid * grid, attention.k_proj.in_features)
    q, k, _ = attention.project(tokens, memory, memory)
    angles = axial_rope_angles(grid, grid, q.shape[-1])
    q, k = (apply_rope(x, angles.cos(), angles.sin()) for x in (q, k))
    weights = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
    return weights.diagonal(dim1=-2, dim2=-1).mean()


def test_a_fresh_trackers_memory_attention_looks_up_the_same_place():
    model = untracked_model()
    layers = model.tracker.transformer["encoder"].layers
    assert all(same_place_attention(layer) < 0.1 for layer in layers)  # random projections: no such bias
    initialize_tracker(model, seed=0)
    assert all(same_place_attention(layer) > 0.4 for layer in layers)


def test_the_image_stage_batches_examples_without_mixing_them():
    model = untracked_model()
    initialize_tracker(model, seed=0)
    frames = source(mask_fraction=0.0, box_fraction=0.5)
    examples = [frames.example(position) for position in range(6)]
    assert {e.prompt.kind for e in examples} == {"box", "clicks"}
    weights = config().loss
    together, logged = frame_losses(model, examples, weights)
    alone = [frame_losses(model, [example], weights)[0] for example in examples]
    torch.testing.assert_close(together, torch.stack(alone).mean(), rtol=1e-4, atol=1e-6)
    assert logged["loss"] == pytest.approx(together.item())
    with pytest.raises(ValueError, match="mask_fraction 0"):
        frame_losses(model, [source(mask_fraction=1.0).example(0)], weights)


def test_the_image_stage_learns_prompted_masks(tmp_path):
    images = TrackerSource(ConceptWorld(size=WORLD_SIZE, seed=0), TrackerPromptSampling(mask_fraction=0.0), 0, 1)
    cfg = config(steps=30, batch_size=4, num_frames=1, lr=3e-3, warmup_steps=2, decay_fraction=0.0)
    TrackerTrainer(untracked_model(), Cycle(images, 4), cfg, tmp_path).run(progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert len(losses) == 30 and np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4]), losses


def test_resume_is_exact_and_the_saved_model_tracks(tmp_path):
    cfg = config(steps=3, batch_size=1, ema_decay=0.9)
    straight = TrackerTrainer(untracked_model(), source(seed=2), cfg, tmp_path / "straight")
    straight.run(progress=False)
    first = TrackerTrainer(untracked_model(), source(seed=2), cfg, tmp_path / "split")
    first.run(progress=False, until=1)
    resumed = TrackerTrainer(untracked_model(), source(seed=2), cfg, tmp_path / "split")
    resumed.load_state_dict(load_checkpoint(tmp_path / "split" / CHECKPOINT_FILE))
    resumed.run(progress=False)

    def log(name: str) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "time"}
                for line in (tmp_path / name / LOG_FILE).read_text().splitlines()]

    assert log("split") == log("straight")
    for ours, theirs in ((resumed.model, straight.model), (resumed.ema, straight.ema)):
        theirs_state = tracker_state(theirs)
        assert all(torch.equal(value, theirs_state[key]) for key, value in tracker_state(ours).items())
    loaded = load_model(tmp_path / "straight" / MODEL_DIR)
    assert "tracker" not in loaded.missing_components
    for key, value in tracker_state(straight.ema).items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_cli_trains_resumes_and_refuses_to_overwrite(tmp_path, capsys):
    init = save_model(untracked_model(), tmp_path / "init")
    out = tmp_path / "run"
    common = ["train-tracker", "--out", str(out), "--threads", "1", "--no-progress"]
    args = ["--init", str(init), "--steps", "2", "--batch-size", "1", "--world-size", str(WORLD_SIZE),
            "--frames", str(FRAMES), "--eval-clips", "1", "--eval-every", "2", "--warmup-steps", "1"]
    assert conceptseg.cli.main(common + args) == 0
    settings = json.loads((out / "run.json").read_text())
    assert settings["init"] == str(init) and settings["num_frames"] == FRAMES and settings["steps"] == 2
    records = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    evaluation = records[-1]
    assert evaluation["kind"] == "eval" and set(evaluation) >= {"click", "box"}
    assert 0.0 <= evaluation["click"]["iou"] <= 1.0
    assert "tracker" not in load_model(out / MODEL_DIR).missing_components

    assert conceptseg.cli.main(common + args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert conceptseg.cli.main(common + ["--resume", "--steps", "3"]) == 0
    assert load_checkpoint(out / CHECKPOINT_FILE)["step"] == 3
