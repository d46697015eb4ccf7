"""`conceptseg train-tracker`: train the tracker of a model with a trained detector, on concept-world clips.

    conceptseg train-tracker --out runs/tracker --steps 1000                 # the embedded model's tracker
    conceptseg train-tracker --init runs/embedded/model --out runs/tracker --variety all
    conceptseg train-tracker --out runs/tracker --resume [--steps 1200] [--until 600]
    conceptseg train-tracker --out runs/heads --frames 1 --batch-size 32 --mask-fraction 0   # image stage first

Only the tracker and its neck learn (the embedded model ships without them: they start from a fresh tracker
and a copy of the detector's neck). Every option of a run is stored in OUT/run.json; --resume continues from
OUT/checkpoint.pt with those options, overridden by any option given again. The EMA model goes to OUT/model.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from conceptseg.checkpoint import load_model
from conceptseg.data.synthetic import ConceptWorld
from conceptseg.model.sam3 import SAM3
from conceptseg.train.cli import (
    TRAIN_HELP,
    add_option,
    add_run_arguments,
    merged_settings,
    parse_variety,
    save_settings,
)
from conceptseg.train.tracker_data import TrackerPromptSampling, TrackerSource
from conceptseg.train.tracker_trainer import (
    TrackerTrainConfig,
    TrackerTrainer,
    evaluate_tracking,
    tracking_eval_set,
)
from conceptseg.train.trainer import CHECKPOINT_FILE, MODEL_DIR, load_checkpoint

RUN_OPTIONS: dict[str, tuple[type, Any, str]] = {
    "init": (str, None, "weights to start from (for conceptseg.load_model; None: the embedded model)"),
    "world_size": (int, 224, "side of the concept-world clips in pixels (resized to the model's input)"),
    "variety": (str, "none", "variety of the training clips' drawing: none, all, or factors "
                             "(conceptseg.data.Variety.parse, e.g. 'blur,jpeg')"),
    "eval_clips": (int, 50, "held-out clips (test split, plain drawing) the EMA model tracks when evaluated"),
    "eval_frames": (int, 8, "frames of each held-out clip"),
    "eval_seed": (int, 1, "seed of the held-out clips"),
}
SAMPLING_OPTIONS = {f.name: f.default for f in dataclasses.fields(TrackerPromptSampling)}
TRAIN_OPTIONS = {f.name: f.default for f in dataclasses.fields(TrackerTrainConfig) if f.name != "loss"}
HELP = TRAIN_HELP | {  # the options shared with `conceptseg train` keep its words
    "batch_size": "clips per step",
    "num_frames": "frames per clip (1: the image stage, the SAM heads on single prompted frames, batched)",
    "seed": "seed of the tracker's initialisation and of the training clips and prompts",
    "mask_fraction": "share of clips prompted on frame 0 by the object's mask",
    "box_fraction": "share of the other clips prompted by its box (the rest: 1 to --max-clicks clicks)",
    "max_clicks": "most positive clicks of a click prompt",
    "correction_fraction": "share of clips with simulated correction clicks on later frames",
    "max_correction_frames": "most corrected frames per clip",
    "min_area_fraction": "smallest followed object, as a share of the frame",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-tracker", help="train the video tracker (the rest of the model frozen)",
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    add_run_arguments(parser)
    parser.add_argument("--freeze-neck", dest="train_neck", action="store_const", const=False,
                        default=argparse.SUPPRESS, help="train the tracker only, not its neck (faster)")
    parser.add_argument("--frames", dest="num_frames", type=int, default=argparse.SUPPRESS,
                        help=f"{HELP['num_frames']} (default: {TRAIN_OPTIONS['num_frames']})")
    for name, (kind, default, help_text) in RUN_OPTIONS.items():
        add_option(parser, name, kind, f"{help_text} (default: {default})")
    for name, default in (TRAIN_OPTIONS | SAMPLING_OPTIONS).items():
        if name not in ("train_neck", "num_frames"):
            add_option(parser, name, type(default), f"{HELP[name]} (default: {default})")
    parser.set_defaults(func=run_train_tracker)


def run_train_tracker(args: argparse.Namespace) -> int:
    out = Path(args.out)
    settings = _settings(args, out)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    config = TrackerTrainConfig.from_dict({name: settings[name] for name in TRAIN_OPTIONS})
    model = load_model(settings["init"])
    world = ConceptWorld(size=settings["world_size"], split="train", seed=config.seed,
                         variety=parse_variety(settings["variety"]))
    sampling = TrackerPromptSampling(**{name: settings[name] for name in SAMPLING_OPTIONS})
    source = TrackerSource(world, sampling, config.seed, config.num_frames)
    trainer = TrackerTrainer(model, source, config, out, _build_evaluator(settings))
    if args.resume:
        trainer.load_state_dict(load_checkpoint(out / CHECKPOINT_FILE))
    trainer.run(progress=not args.no_progress, until=args.until)
    print(f"{trainer.step} steps in {trainer.elapsed / 60:.1f} min; EMA model saved to {out / MODEL_DIR}")
    return 0


def _settings(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Defaults, then the resumed run's options, then the options given now; saved to OUT/run.json."""
    defaults = {name: default for name, (_, default, _) in RUN_OPTIONS.items()}
    settings = merged_settings(args, out, defaults | TRAIN_OPTIONS | SAMPLING_OPTIONS)
    parse_variety(settings["variety"])
    save_settings(out, settings)
    return settings


def _build_evaluator(settings: dict[str, Any]) -> Callable[[SAM3], dict[str, Any]] | None:
    """Tracking of held-out clips (`evaluate_tracking`), or None with --eval-clips 0."""
    if not settings["eval_clips"]:
        return None
    world = ConceptWorld(size=settings["world_size"], split="test", seed=settings["eval_seed"])
    examples = tracking_eval_set(TrackerSource(world, seed=settings["eval_seed"], num_frames=settings["eval_frames"]),
                                 settings["eval_clips"])

    def evaluate(model: SAM3) -> dict[str, dict[str, float]]:
        return evaluate_tracking(model, examples)

    return evaluate
