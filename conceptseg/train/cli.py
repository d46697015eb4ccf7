"""`conceptseg train`: train or fine-tune the concept detector on the concept world or an SA-Co/COCO dataset.

    conceptseg train --config embedded --data synthetic --steps 3000 --out runs/embedded
    conceptseg train --init sam3.pt --data saco --gt train.json --images imgs/ --lr 1e-5 --out runs/ft
    conceptseg train --out runs/embedded --resume [--steps 4000] [--until 2000]

Every option of a run is stored in OUT/run.json; --resume continues from OUT/checkpoint.pt with those options,
overridden by any option given again (e.g. a larger --steps to train longer).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from conceptseg.checkpoint import load_model
from conceptseg.cli import UsageError
from conceptseg.data.synthetic import ConceptWorld
from conceptseg.data.synthetic_export import export_saco_image_benchmark
from conceptseg.data.synthetic_style import Variety
from conceptseg.eval.dataset import SacoDataset
from conceptseg.eval.model_eval import evaluate_model
from conceptseg.model.configs import CONFIGS
from conceptseg.model.sam3 import SAM3
from conceptseg.train.alignment import AlignmentConfig, pretrain_alignment
from conceptseg.train.data import (
    ConceptWorldSource,
    DatasetSource,
    PromptSampling,
    TrainingSource,
    replace_world,
)
from conceptseg.train.trainer import (
    CHECKPOINT_FILE,
    MODEL_DIR,
    TrainConfig,
    Trainer,
    initialize_from_scratch,
    load_checkpoint,
)

RUN_FILE = "run.json"
ALIGNMENT_LOG = "alignment.jsonl"
# options that describe the model and the data (TrainConfig's fields are added to these)
RUN_OPTIONS: dict[str, tuple[type, Any, str]] = {
    "config": (str, "embedded", "model config for training from scratch: embedded, tiny or sam3"),
    "init": (str, None, "start from these weights (anything conceptseg.load_model accepts), not from scratch"),
    "data": (str, "synthetic", "training data: synthetic (the concept world) or saco (--gt and --images)"),
    "gt": (str, None, "SA-Co image GT (or COCO instances) JSON of the training data"),
    "images": (str, None, "image directory of --gt"),
    "world_size": (int, None, "concept-world image side in pixels (None: the model's input size; the "
                              "benchmarks render 224 px scenes, resized to the model's input)"),
    "positive_fraction": (float, 0.45, "share of concept-world text prompts with an instance (the benchmarks': 0.45)"),
    "hard_negative_fraction": (float, 0.85, "share of the concept-world negatives that are hard ones"),
    "variety": (str, "none", "training-time variety of the concept world's drawing: none, all, or factors "
                             "(conceptseg.data.Variety.parse, e.g. 'all,confusers=0.5' or 'blur,jpeg')"),
    "varied_fraction": (float, 1.0, "share of concept-world examples drawn with --variety; the rest use the plain "
                                    "renderer and are the only ones distilled"),
    "easy_steps": (int, 0, "curriculum: the first N steps see no hard negatives"),
    "align_steps": (int, 0, "region-phrase alignment pre-training steps before detector training (synthetic data)"),
    "align_lr": (float, AlignmentConfig.lr, "peak learning rate of the alignment pre-training"),
    "align_attribute_weight": (float, AlignmentConfig.attribute_weight,
                               "weight of the alignment stage's object-attribute classification loss"),
    "exemplar_fraction": (float, 0.2, "share of examples prompted by 'visual' + one positive exemplar box"),
    "extra_box_fraction": (float, 0.2, "share of text prompts with extra positive/negative exemplar boxes"),
    "cross_exemplar_fraction": (float, 0.0, "share of examples prompted by 'visual' + a positive exemplar box "
                                            "drawn on another scene, half of them negatives (synthetic data)"),
    "eval_gt": (str, None, "SA-Co GT to evaluate on (None, synthetic data: a generated test benchmark)"),
    "eval_images": (str, None, "image directory of --eval-gt"),
    "eval_pairs": (int, 500, "size of the generated text-prompt test benchmark (synthetic data)"),
    "eval_exemplar_pairs": (int, 200, "size of the generated exemplar-prompt test benchmark (0: none)"),
    "eval_seed": (int, 1, "seed of the generated test benchmarks (the test split, never seen in training)"),
}
TRAIN_OPTIONS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name != "loss"}
TRAIN_HELP = {
    "steps": "total optimisation steps (the LR schedule is sized to them)",
    "batch_size": "examples per step",
    "lr": "peak learning rate (AdamW)",
    "weight_decay": "AdamW weight decay of linear/conv weights",
    "vision_lr_scale": "LR multiplier of the ViT trunk",
    "text_lr_scale": "LR multiplier of the text transformer",
    "train_only": "comma-separated module or parameter names to train, the rest frozen (e.g. detector.geometry_encoder)",
    "warmup_steps": "linear warm-up steps",
    "decay_fraction": "cosine decay over this last share of the steps (1: cosine after warm-up)",
    "min_lr_ratio": "final LR as a share of --lr",
    "clip_grad_norm": "gradient-norm clipping threshold",
    "ema_decay": "decay of the EMA weights (evaluated and saved)",
    "mask_size": "side of the mask targets (default: the model's mask size)",
    "seed": "seed of the model initialisation, the training data and prompt sampling",
    "save_every": "checkpoint every N steps",
    "eval_every": "evaluate the EMA model every N steps",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train or fine-tune the concept detector", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.splitlines()[1:]),
    )
    add_run_arguments(parser)
    for name, (kind, default, help_text) in RUN_OPTIONS.items():
        add_option(parser, name, kind, f"{help_text} (default: {default})")
    for name, default in TRAIN_OPTIONS.items():
        add_option(parser, name, type(default) if default is not None else int, f"{TRAIN_HELP[name]} (default: {default})")
    parser.add_argument("--loss-weight", action="append", metavar="NAME=VALUE", default=argparse.SUPPRESS,
                        help="override a LossWeights field, e.g. presence=40 (repeatable)")
    parser.set_defaults(func=run_train)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every training command has: --out, --resume, --threads, --no-progress, --until."""
    parser.add_argument("--out", required=True, metavar="DIR", help="run directory: checkpoint, log, model")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--until", type=int, metavar="STEP",
                        help="stop after this step (the LR schedule stays sized to --steps; --resume goes on)")


def add_option(parser: argparse.ArgumentParser, name: str, kind: type, help_text: str) -> None:
    # SUPPRESS: only options given on the command line appear, so they can override a resumed run's options
    parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=argparse.SUPPRESS, help=help_text)


def merged_settings(args: argparse.Namespace, out: Path, defaults: dict[str, Any]) -> dict[str, Any]:
    """`defaults`, then the resumed run's options (OUT/run.json), then the options given now. Refuses to start
    a run over an existing one, or to resume one that has no checkpoint."""
    saved: dict[str, Any] = {}
    if args.resume:
        if not (out / CHECKPOINT_FILE).is_file():
            raise UsageError(f"--resume: no {CHECKPOINT_FILE} in {out}")
        saved = json.loads((out / RUN_FILE).read_text())
    elif (out / CHECKPOINT_FILE).exists():
        raise UsageError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    return defaults | saved | {name: value for name, value in vars(args).items() if name in defaults}


def save_settings(out: Path, settings: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_FILE).write_text(json.dumps(settings, indent=2))


def parse_variety(text: str) -> Variety:
    """--variety's value as a `Variety`; a clear usage error if it is not one."""
    try:
        return Variety.parse(text)
    except ValueError as error:
        raise UsageError(f"--variety: {error}") from None


def run_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    settings = _settings(args, out)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    train_config = TrainConfig.from_dict({k: settings[k] for k in TRAIN_OPTIONS} | {"loss": settings["loss"]})
    model = _build_model(settings)
    if settings["align_steps"] and not args.resume:
        _pretrain_alignment(model, settings, out, progress=not args.no_progress)
    trainer = Trainer(model, _build_source(settings, model), train_config, out, _build_evaluator(settings, model, out))
    if args.resume:
        trainer.load_state_dict(load_checkpoint(out / CHECKPOINT_FILE))
    trainer.run(progress=not args.no_progress, until=args.until)
    print(f"{trainer.step} steps in {trainer.elapsed / 60:.1f} min; EMA model saved to {out / MODEL_DIR}")
    return 0


def _settings(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Defaults, then the resumed run's options, then the options given now; saved to OUT/run.json."""
    defaults = {name: default for name, (_, default, _) in RUN_OPTIONS.items()} | TRAIN_OPTIONS | {"loss": {}}
    settings = merged_settings(args, out, defaults)
    loss = dict(settings["loss"])
    for item in getattr(args, "loss_weight", []):
        name, _, value = item.partition("=")
        try:
            loss[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--loss-weight {item!r}: expected NAME=NUMBER, e.g. presence=40") from None
    settings["loss"] = loss
    _check(settings)
    save_settings(out, settings)
    return settings


def _check(settings: dict[str, Any]) -> None:
    if settings["data"] not in ("synthetic", "saco"):
        raise UsageError(f"--data must be synthetic or saco, got {settings['data']!r}")
    if settings["data"] == "saco" and not (settings["gt"] and settings["images"]):
        raise UsageError("--data saco needs --gt GT.json and --images DIR")
    if bool(settings["eval_gt"]) != bool(settings["eval_images"]):
        raise UsageError("--eval-gt and --eval-images go together")
    if settings["cross_exemplar_fraction"] and settings["data"] != "synthetic":
        raise UsageError("--cross-exemplar-fraction needs --data synthetic (it draws reference scenes)")
    if settings["align_steps"] and settings["data"] != "synthetic":
        raise UsageError("--align-steps needs --data synthetic (it pairs concept-world objects with phrases)")
    parse_variety(settings["variety"])
    if settings["variety"] != "none" and settings["data"] != "synthetic":
        raise UsageError("--variety needs --data synthetic (it changes how concept-world scenes are drawn)")
    if settings["loss"].get("distillation") and not settings["init"]:
        raise UsageError("--loss-weight distillation=W needs --init: the teacher is the weights the run starts from")
    if settings["init"] is None and settings["config"] not in ("embedded", "tiny", "sam3"):
        raise UsageError(f"--config must be embedded, tiny or sam3, got {settings['config']!r}")


def _build_model(settings: dict[str, Any]) -> SAM3:
    torch.manual_seed(settings["seed"])
    if settings["init"]:
        return load_model(settings["init"])
    model = SAM3(CONFIGS[settings["config"]]())
    initialize_from_scratch(model)
    return model


def _pretrain_alignment(model: SAM3, settings: dict[str, Any], out: Path, progress: bool) -> None:
    """Align the encoders first (see conceptseg.train.alignment); per-step records go to OUT/alignment.jsonl."""
    size = settings["world_size"] or model.config.vit.image_size
    world = ConceptWorld(size=size, split="train", seed=settings["seed"])
    log: list[dict[str, float]] = []
    config = AlignmentConfig(steps=settings["align_steps"], lr=settings["align_lr"],
                             attribute_weight=settings["align_attribute_weight"], seed=settings["seed"])
    pretrain_alignment(model, world, config, progress, log)
    (out / ALIGNMENT_LOG).write_text("".join(json.dumps(record) + "\n" for record in log))


def _build_source(settings: dict[str, Any], model: SAM3) -> TrainingSource:
    sampling = PromptSampling(settings["exemplar_fraction"], settings["extra_box_fraction"],
                              settings["cross_exemplar_fraction"])
    if settings["data"] == "saco":
        return DatasetSource(SacoDataset(settings["gt"], settings["images"]), sampling, settings["seed"])
    size = settings["world_size"] or model.config.vit.image_size
    world = ConceptWorld(size=size, split="train", seed=settings["seed"], positive_fraction=settings["positive_fraction"],
                         hard_negative_fraction=settings["hard_negative_fraction"])
    easy_examples = settings["easy_steps"] * settings["batch_size"]
    variety = parse_variety(settings["variety"])
    if not variety.active:
        return ConceptWorldSource(world, sampling, settings["seed"], easy_examples)
    return ConceptWorldSource(world, sampling, settings["seed"], easy_examples,
                              replace_world(world, variety=variety), settings["varied_fraction"])


def _build_evaluator(
    settings: dict[str, Any], model: SAM3, out: Path
) -> Callable[[SAM3], dict[str, dict[str, float]]] | None:
    """A callable scoring a model on every evaluation benchmark of the run (None if there is none)."""
    benchmarks = {}
    if settings["eval_gt"]:
        benchmarks["eval"] = (settings["eval_gt"], settings["eval_images"], "text")
    elif settings["data"] == "synthetic":
        size = settings["world_size"] or model.config.vit.image_size
        for prompt, count in (("text", settings["eval_pairs"]), ("exemplar", settings["eval_exemplar_pairs"])):
            folder = out / "eval" / f"{prompt}-seed{settings['eval_seed']}-{count}"
            if count and not (folder / "gt.json").exists():
                export_saco_image_benchmark(folder, count, settings["eval_seed"], "test", size, prompt)
            if count:
                benchmarks[prompt] = (folder / "gt.json", folder / "images", prompt)
    if not benchmarks:
        return None
    return lambda m: {name: evaluate_model(m, *spec) for name, spec in benchmarks.items()}
