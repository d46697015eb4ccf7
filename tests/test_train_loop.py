"""The training loop: the loss falls on a small dataset, resume is exact, schedule and groups, the CLI."""

import argparse
import itertools
import json

import pytest
import torch
from torch import nn

import conceptseg.cli
from conceptseg import SAM3, load_model, tiny_config
from conceptseg.data import Variety
from conceptseg.data.examples import example_from_sample
from conceptseg.data.synthetic import ConceptWorld
from conceptseg.train.cli import _build_source, _settings
from conceptseg.train.data import ConceptWorldSource, DatasetSource, PromptSampling, collate
from conceptseg.train.losses import LossWeights, SetCriterion
from conceptseg.train.trainer import (
    CHECKPOINT_FILE,
    LOG_FILE,
    TrainConfig,
    Trainer,
    detect_batch,
    initialize_from_scratch,
    learning_rate,
    load_checkpoint,
    parameter_groups,
)

IMAGE_SIZE = 56  # tiny config at 56 px: 4x4 tokens, 16x16 masks


def tiny_model(seed: int = 0) -> SAM3:
    torch.manual_seed(seed)
    model = SAM3(tiny_config(image_size=IMAGE_SIZE))
    initialize_from_scratch(model)
    return model


def test_fine_tuning_on_four_images_lowers_the_loss(tmp_path):
    world = ConceptWorld(size=IMAGE_SIZE, seed=0, positive_fraction=1.0, max_objects=3)
    dataset = [example_from_sample(world.sample(i)) for i in range(4)]
    model = tiny_model()
    criterion = SetCriterion()
    batch = collate(dataset, IMAGE_SIZE, model.config.mask_size)

    def dataset_loss() -> float:
        with torch.no_grad():
            outputs = model.detect(batch.pixel_values, batch.input_ids)
            return criterion(outputs, batch.targets)[1]["loss"]

    before = dataset_loss()
    config = TrainConfig(steps=30, batch_size=4, lr=2e-3, warmup_steps=3, decay_fraction=0.0, save_every=1000)
    Trainer(model, DatasetSource(dataset, PromptSampling(0.0, 0.0)), config, tmp_path).run(progress=False)
    after = dataset_loss()
    assert after < 0.5 * before, (before, after)
    records = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 31))


def test_resume_is_exact(tmp_path):
    # with the attribute loss on, so that its classifiers (outside the model) are checkpointed too
    config = TrainConfig(steps=4, batch_size=3, warmup_steps=2, decay_fraction=0.5, ema_decay=0.9, save_every=1000,
                         loss=LossWeights(attribute=1.0))

    def source() -> ConceptWorldSource:
        return ConceptWorldSource(ConceptWorld(size=IMAGE_SIZE, seed=1, max_objects=4), PromptSampling(0.3, 0.3))

    straight = Trainer(tiny_model(), source(), config, tmp_path / "straight")
    straight.run(progress=False)

    # stopped early (`until`: the schedule stays sized to 4 steps; the last step is checkpointed), then resumed
    first = Trainer(tiny_model(), source(), config, tmp_path / "split")
    first.run(progress=False, until=2)
    assert first.step == 2
    resumed = Trainer(tiny_model(seed=99), source(), config, tmp_path / "split")
    resumed.load_state_dict(load_checkpoint(tmp_path / "split" / CHECKPOINT_FILE))
    resumed.run(progress=False)

    assert resumed.step == straight.step == 4 and resumed.position == straight.position == 12
    for name in ("model", "ema", "attribute_heads"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[key], b[key]) for key in a), name
    moments_a = straight.optimizer.state_dict()["state"]
    moments_b = resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(moments_a[i]["exp_avg_sq"], moments_b[i]["exp_avg_sq"]) for i in moments_a)


def test_exemplars_from_other_scenes_are_encoded_on_those_and_trained():
    model = tiny_model()
    world = ConceptWorld(size=IMAGE_SIZE, seed=2, max_objects=4)
    source = ConceptWorldSource(world, PromptSampling(0.0, 0.0, cross_exemplar_fraction=0.5))
    batch = collate([source.example(p) for p in range(6)], IMAGE_SIZE, model.config.mask_size)
    rows = batch.prompt_rows.tolist()
    assert 0 < len(rows) < 6
    outputs = detect_batch(model, batch)
    # the same as encoding each prompt on its own image by hand
    image = model.encode_image(batch.pixel_values)
    drawn_on = model.encode_image(batch.pixel_values.index_copy(0, batch.prompt_rows, batch.prompt_pixel_values))
    exemplars = model.encode_exemplars(drawn_on, batch.prompt_boxes, batch.prompt_labels)
    expected = model.detect(image, batch.input_ids, exemplars=exemplars)
    torch.testing.assert_close(outputs["pred_logits"], expected["pred_logits"], rtol=1e-4, atol=1e-5)
    loss, _ = SetCriterion()(outputs, batch.targets)
    loss.backward()
    assert model.detector.geometry_encoder.boxes_pool_project.weight.grad.abs().sum() > 0


def test_detect_batch_adds_the_fusion_encoders_image_and_text_inputs():
    model = tiny_model()
    world = ConceptWorld(size=IMAGE_SIZE, seed=5, max_objects=4)
    source = ConceptWorldSource(world, PromptSampling(0.3, 0.3, cross_exemplar_fraction=0.3))
    batch = collate([source.example(p) for p in range(4)], IMAGE_SIZE, model.config.mask_size)
    outputs = detect_batch(model, batch)
    coarse = model.encode_image(batch.pixel_values).levels[-1]
    text = model.encode_text(batch.input_ids)
    torch.testing.assert_close(outputs["image_tokens"], coarse.flatten(2).transpose(1, 2), rtol=0, atol=0)
    torch.testing.assert_close(outputs["text_tokens"], text.tokens, rtol=0, atol=0)
    assert torch.equal(outputs["text_padding"], text.padding)
    assert not model.detector.fusion_encoder._forward_pre_hooks  # the hook is gone


def test_learning_rate_warms_up_holds_and_decays():
    config = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, decay_fraction=0.5, min_lr_ratio=0.1)
    rates = [learning_rate(step, config) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert rates[10:51] == [1e-3] * 41
    assert all(later <= earlier for earlier, later in itertools.pairwise(rates[50:]))
    assert rates[99] == pytest.approx(1e-4, rel=0.01)


def test_parameter_groups_exclude_norms_biases_embeddings_and_the_tracker():
    model = SAM3(tiny_config(image_size=IMAGE_SIZE))
    config = TrainConfig(weight_decay=0.1, vision_lr_scale=0.5, text_lr_scale=0.1)
    groups = parameter_groups(model, config)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = [names[id(p)] for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    assert not any(n.startswith(("tracker.", "backbone.tracker_neck.")) for n in grouped)
    assert all(n in grouped for n in names.values() if n.startswith(("detector.", "backbone.trunk.")))
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if id(param) in names and names[id(param)] in grouped:
                is_norm_or_table = isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.Embedding)) or param.dim() < 2
                assert (id(param) in decayed) != is_norm_or_table or names[id(param)].endswith(
                    ("pos_embed", "positional_embedding", "text_projection")), names[id(param)]
    scales = {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    assert scales["backbone.trunk.patch_embed.proj.weight"] == 0.5
    assert scales["detector.text_encoder.encoder.token_embedding.weight"] == 0.1
    assert scales["detector.text_encoder.resizer.weight"] == 1.0


def test_train_only_updates_the_named_modules_and_leaves_the_rest_bit_for_bit(tmp_path):
    model = tiny_model()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    source = ConceptWorldSource(ConceptWorld(size=IMAGE_SIZE, seed=3, max_objects=4), PromptSampling(0.3, 0.3))
    config = TrainConfig(steps=2, batch_size=3, warmup_steps=1, save_every=1000, train_only="detector.geometry_encoder")
    trainer = Trainer(model, source, config, tmp_path)
    trainer.run(progress=False)
    changed = {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}
    assert changed and all(name.startswith("detector.geometry_encoder.") for name in changed)
    # frozen modules get no gradients at all: the backbone's backward pass is skipped
    assert model.backbone.trunk.patch_embed.proj.weight.grad is None
    with pytest.raises(ValueError, match="detector.geometry"):
        parameter_groups(tiny_model(), TrainConfig(train_only="detector.geometry"))


def test_distillation_keeps_a_frozen_teacher_of_the_starting_weights(tmp_path):
    model = tiny_model()
    start = {name: value.clone() for name, value in model.state_dict().items()}
    world = ConceptWorld(size=IMAGE_SIZE, seed=4, max_objects=4)
    source = ConceptWorldSource(world, PromptSampling(0.2, 0.0, cross_exemplar_fraction=0.3))
    config = TrainConfig(steps=3, batch_size=4, lr=1e-3, warmup_steps=1, save_every=1000,
                         loss=LossWeights(distillation=10.0))
    trainer = Trainer(model, source, config, tmp_path)
    trainer.run(progress=False)
    teacher = trainer.teacher.state_dict()
    assert all(torch.equal(teacher[name], start[name]) for name in start)
    assert any(not torch.equal(value, start[name]) for name, value in model.state_dict().items())
    records = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert records[0]["distillation"] == pytest.approx(0.0, abs=1e-6)  # the student starts as the teacher
    assert max(r["distillation"] for r in records[1:]) > 1e-6


def test_cli_trains_evaluates_resumes_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    if "conceptseg.train.cli" not in conceptseg.cli.SUBCOMMANDS:
        monkeypatch.setattr(conceptseg.cli, "SUBCOMMANDS", (*conceptseg.cli.SUBCOMMANDS, "conceptseg.train.cli"))
    out = str(tmp_path / "run")
    common = ["--no-progress", "--eval-pairs", "4", "--eval-exemplar-pairs", "2", "--eval-every", "2"]
    argv = ["train", "--out", out, "--config", "tiny", "--world-size", "64", "--steps", "2", "--batch-size", "2",
            "--save-every", "1", "--warmup-steps", "1", "--loss-weight", "presence=30", *common]
    assert conceptseg.cli.main(argv) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    evaluations = [r for r in records if r["kind"] == "eval"]
    assert len(evaluations) == 1 and {"text", "exemplar"} <= evaluations[0].keys()
    assert 0 <= evaluations[0]["text"]["cgF1"] <= 100
    assert load_model(tmp_path / "run" / "model").config == tiny_config()
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["loss"] == {"presence": 30.0} and saved["steps"] == 2

    assert conceptseg.cli.main(["train", "--out", out, "--resume", "--steps", "3", *common]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)["train_config"]["loss"]["presence"] == 30.0

    assert conceptseg.cli.main(["train", "--out", out, "--config", "tiny"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert conceptseg.cli.main(["train", "--out", str(tmp_path / "other"), "--config", "tiny",
                                "--loss-weight", "distillation=1"]) == 2
    assert "--init" in capsys.readouterr().err
    assert conceptseg.cli.main(["train", "--out", str(tmp_path / "other"), "--config", "tiny",
                                "--variety", "blurry"]) == 2
    assert "--variety" in capsys.readouterr().err


def test_cli_draws_a_share_of_the_scenes_with_variety(tmp_path):
    settings = _settings(argparse.Namespace(out=str(tmp_path), resume=False, variety="blur,jpeg",
                                            varied_fraction=0.25), tmp_path)
    source = _build_source(settings, SAM3(tiny_config()))
    assert source.varied_world.variety == Variety(blur=True, jpeg=True) and source.varied_fraction == 0.25
    assert source.world.variety == Variety()
    plain = _build_source(_settings(argparse.Namespace(out=str(tmp_path), resume=False), tmp_path),
                          SAM3(tiny_config()))
    assert plain.varied_world is None
