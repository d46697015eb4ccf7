"""Train the embedded model: the shipped model's recipe in one resumable command.

    python tools/train_embedded.py [--root runs/embedded] [--stage all|robust|tracker]

`--stage all` (the default) trains from scratch: the stages run09 ... run27 of docs/embedded-model-runs.md
("Training: the recipe, command by command") in order, each a `conceptseg train` run starting from an earlier
stage's weights, and installs the last as the package's embedded model: about 12 hours on the 2-core CPU.
`--stage robust` is the robustness fine-tune under development (run 28 of the notebook, about 70 minutes): it
takes the shipped run-27 model out of git history (`tools/shipped_model.py`) and fine-tunes it on scenes drawn
with training-time variety; it installs nothing (its model is ROOT/run28/model), as it does not yet beat run 27.
`--stage tracker` trains the tracker of the installed embedded model, its detector frozen (about 90 minutes;
notebook: "The tracker"): from the installed detector (any tracker dropped), SAM 2's two stages, single prompted
frames (tracker-image), then 8-frame clips with memory (tracker-video), and installs the result.
Stage NAME writes to ROOT/NAME, and ROOT/stages.jsonl records every finished stage with its wall time, so after
an interruption the same command goes on: finished stages are skipped and a training stage resumes from its
last checkpoint (saved every 200 steps). Every stage runs in a fresh process, as if typed by hand.
"""

# (no `from __future__ import annotations`: loaded as a file, outside sys.modules, as the tests do, a dataclass
# with string annotations fails)
import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
EMBEDDED = REPO / "conceptseg" / "assets" / "embedded"  # the installed embedded model of this checkout
ROBUST_STEPS = 2500
# everything but the text encoder: the drawings are what must generalise, the phrases' meaning stays
ROBUST_TRAINED = ",".join(("backbone.trunk", "backbone.neck", "detector.geometry_encoder", "detector.fusion_encoder",
                           "detector.decoder", "detector.scorer", "detector.segmentation_head",
                           "detector.proposal_head", "detector.proposal_norm"))
STAGES_FILE = "stages.jsonl"
# options shared by every detector-training stage
EVALUATION = ["--eval-pairs", "200", "--eval-exemplar-pairs", "0", "--save-every", "200"]
FINE_TUNING = ["--loss-weight", "alignment=1", "--loss-weight", "focal_alpha=0.5"]
# a short alignment stage (see docs: "Patterns") before detector training
REALIGN = ["--align-steps", "250", "--align-lr", "1e-3", "--align-attribute-weight", "20"]
ATTRIBUTES = ["--loss-weight", "attribute=10"]
# the last commit whose embedded model is run 27, where `--stage robust` starts
RUN27_COMMIT = "47186f68e0bef1ac085e18d2467c550dd37954aa"
STAGE_CHOICES = ("all", "robust", "tracker")
# options shared by the tracker stages: the neck stays the detector's copy, a short run's EMA
TRACKER_RUN = ["--freeze-neck", "--ema-decay", "0.99", "--eval-clips", "30"]


def train(root: Path, out: str, *options: str) -> list[str]:
    """`conceptseg train` writing to ROOT/OUT."""
    return ["-m", "conceptseg.cli", "train", "--out", str(root / out), *options]


@dataclass(frozen=True)
class FineTune:
    """A detector-training stage starting from an earlier stage's weights; its run directory is ROOT/NAME.

    Numbers that go to the command line as typed (lr, decay) are strings, so the arguments stay as written.
    """

    name: str
    start: str  # the weights it starts from (--init), relative to ROOT
    seed: int
    steps: int
    lr: str
    warmup: int  # --warmup-steps
    decay: str  # --decay-fraction
    eval_every: int
    options: tuple[str, ...] = ()  # added after the shared evaluation and fine-tuning options

    def stage(self, root: Path) -> tuple[str, list[str]]:
        """(name, arguments after `python`)."""
        return self.name, train(root, self.name, "--init", str(root / self.start), "--seed", str(self.seed),
                                "--steps", str(self.steps), "--lr", self.lr, "--warmup-steps", str(self.warmup),
                                "--decay-fraction", self.decay, "--eval-every", str(self.eval_every),
                                *EVALUATION, *FINE_TUNING, *self.options)


def train_tracker(root: Path, out: str, *options: str) -> list[str]:
    """`conceptseg train-tracker` writing to ROOT/OUT."""
    return ["-m", "conceptseg.cli", "train-tracker", "--out", str(root / out), *TRACKER_RUN, *options]


def tracker_stages(root: Path) -> list[tuple[str, list[str]]]:
    """The embedded model's tracker, from the installed model's detector (its tracker, if any, dropped): the SAM
    heads on single frames prompted by a box or clicks (their loss sits on a plateau for about 600 steps before
    the decoder learns where a prompt points), then tracking with memory; then installed."""
    detector = root / "tracker-start"
    return [
        ("tracker-start", tool("export_embedded.py", str(EMBEDDED), "--out", str(detector),
                               "--drop-tracker")),
        ("tracker-image", train_tracker(root, "tracker-image", "--init", str(detector), "--frames", "1",
                                        "--batch-size", "32",
                                        "--mask-fraction", "0", "--seed", "0", "--steps", "3000", "--lr", "1e-3",
                                        "--warmup-steps", "50", "--eval-every", "1000", "--save-every", "250")),
        ("tracker-video", train_tracker(root, "tracker-video", "--init", str(root / "tracker-image" / "model"),
                                        "--frames", "8", "--batch-size", "4", "--seed", "1", "--steps", "1200", "--lr", "5e-4",
                                        "--warmup-steps", "30", "--eval-every", "400", "--save-every", "100")),
        ("tracker-install", tool("export_embedded.py", str(root / "tracker-video" / "model"))),
    ]


def tool(script: str, *arguments: str) -> list[str]:
    """A script of tools/ with its arguments."""
    return [str(TOOLS / script), *arguments]


def robust_stages(root: Path, start: str) -> list[tuple[str, list[str]]]:
    """Fine-tune `start` (relative to ROOT) on concept-world scenes drawn with every kind of variety, while the
    plain scenes' text prompts are held to the starting model by distillation (run 28)."""
    return [
        FineTune("run28", start, seed=19, steps=ROBUST_STEPS, lr="2e-4", warmup=100, decay="0.5",
                 eval_every=ROBUST_STEPS // 2,
                 options=(*ATTRIBUTES, "--world-size", "224", "--variety", "all", "--varied-fraction", "0.6",
                          "--cross-exemplar-fraction", "0.15", "--train-only", ROBUST_TRAINED,
                          "--loss-weight", "distillation=2000")).stage(root),
    ]


def recipe(root: Path, stage: str = "all") -> list[tuple[str, list[str]]]:
    """(name, arguments after `python`) of every stage, in order."""
    if stage not in STAGE_CHOICES:
        raise ValueError(f"stage must be one of {STAGE_CHOICES}, got {stage!r}")
    if stage == "robust":
        return [("run27-shipped", tool("shipped_model.py", RUN27_COMMIT, "--out", f"{root}/run27-shipped")),
                *robust_stages(root, "run27-shipped")]
    if stage == "tracker":
        return tracker_stages(root)
    return [
        ("run09", train(root, "run09", "--config", "embedded", "--data", "synthetic", "--align-steps", "500",
                        "--align-lr", "1e-3", "--steps", "3200", "--batch-size", "16", "--lr", "5e-4",
                        "--eval-every", "700", *EVALUATION, "--seed", "0", "--loss-weight", "alignment=1")),
        # run09 trained on to 4200 steps (its schedule re-sized to them)
        ("run09b", train(root, "run09", "--resume", "--steps", "4200", "--eval-every", "1000")),
        # a fixed calibration point with SAM 3's mask threshold, not a search: the later stages start from it.
        # (The current evaluator would rank (8, +0) first on the grid (1, 2, 4, 8) x (0, 1, 2, 3).)
        ("run09-calibrate", tool("calibrate_scores.py", f"{root}/run09/model", f"{root}/run09/calibrated",
                                 "--query-scales", "1", "--presence-shifts", "3", "--mask-thresholds", "0.5")),
        # run10 starts from run09's half-precision export
        ("run09-export", tool("export_embedded.py", f"{root}/run09/calibrated", "--out", f"{root}/run09/exported")),
        FineTune("run10", "run09/exported", seed=1, steps=4000, lr="5e-4", warmup=100, decay="0.5",
                 eval_every=1000).stage(root),
        FineTune("run11", "run10/model", seed=2, steps=1200, lr="3e-4", warmup=50, decay="1.0",
                 eval_every=600).stage(root),
        FineTune("run12", "run11/model", seed=4, steps=5600, lr="5e-4", warmup=100, decay="0.5",
                 eval_every=1400).stage(root),
        FineTune("run13", "run12/model", seed=5, steps=4200, lr="5e-4", warmup=100, decay="0.5",
                 eval_every=1050, options=(*REALIGN,)).stage(root),
        FineTune("run14", "run13/model", seed=6, steps=4400, lr="5e-4", warmup=100, decay="0.5",
                 eval_every=1100, options=(*REALIGN, *ATTRIBUTES)).stage(root),
        # stops after step 1600, its learning rates those of a 4000-step schedule
        FineTune("run16", "run14/model", seed=8, steps=4000, lr="3e-4", warmup=100, decay="0.5",
                 eval_every=1000, options=(*ATTRIBUTES, "--until", "1600")).stage(root),
        # the benchmarks' 224 px scenes from here on (see docs: "Train on the benchmark's images")
        FineTune("run17", "run16/model", seed=9, steps=4000, lr="3e-4", warmup=50, decay="0.5",
                 eval_every=1000, options=(*ATTRIBUTES, "--world-size", "224")).stage(root),
        ("run17-calibrate", tool("calibrate_scores.py", f"{root}/run17/model", f"{root}/run17/calibrated",
                                 "--pairs", "300")),
        # run27 teaches the geometry encoder (alone) exemplars drawn on other images, and holds the text prompts
        # to run17's outputs by distillation; it starts from run17's half-precision export and keeps its
        # calibration
        ("run17-export", tool("export_embedded.py", f"{root}/run17/calibrated", "--out", f"{root}/run17/exported")),
        FineTune("run27", "run17/exported", seed=18, steps=800, lr="2e-4", warmup=50, decay="0.5", eval_every=800,
                 options=(*ATTRIBUTES, "--world-size", "224", "--cross-exemplar-fraction", "0.3",
                          "--exemplar-fraction", "0.1", "--train-only", "detector.geometry_encoder",
                          "--loss-weight", "distillation=2000")).stage(root),
        ("install", tool("export_embedded.py", f"{root}/run27/model")),
    ]


def run_stages(stages: list[tuple[str, list[str]]], root: Path, env: dict[str, str]) -> None:
    """Run the stages not yet recorded in ROOT/stages.jsonl; a training stage with a checkpoint resumes."""
    root.mkdir(parents=True, exist_ok=True)
    record_file = root / STAGES_FILE
    lines = record_file.read_text().splitlines() if record_file.exists() else []
    finished = {json.loads(line)["stage"] for line in lines}
    for name, arguments in stages:
        if name in finished:
            print(f"== {name}: finished earlier, skipped", flush=True)
            continue
        if arguments[1:3] in (["conceptseg.cli", "train"], ["conceptseg.cli", "train-tracker"]) \
                and "--resume" not in arguments:
            out = Path(arguments[arguments.index("--out") + 1])
            if (out / "checkpoint.pt").exists():
                arguments = [*arguments, "--resume"]
        print(f"== {name}: python {' '.join(arguments)}", flush=True)
        started = time.time()
        subprocess.run([sys.executable, *arguments], env=env, check=True)
        minutes = (time.time() - started) / 60
        with open(record_file, "a") as handle:
            handle.write(json.dumps({"stage": name, "minutes": round(minutes, 1)}) + "\n")
        print(f"== {name}: done in {minutes:.1f} min", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/embedded"), help="directory of the stages' runs")
    parser.add_argument("--stage", choices=STAGE_CHOICES, default="all",
                        help="all: from scratch, installed; robust: the robustness fine-tune of the shipped run 27 "
                             "(an experiment: not installed); tracker: the embedded model's tracker, installed")
    args = parser.parse_args()
    # every stage imports this checkout's package, whatever else is installed
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    run_stages(recipe(args.root.resolve(), args.stage), args.root.resolve(), env)
    if args.stage == "tracker":
        print("installed in conceptseg/assets/embedded; measure it with: python benchmarks/embedded_video_quality.py")
        return
    model = "" if args.stage == "all" else f"--model {args.root / 'run28' / 'model'} "
    print(("installed in conceptseg/assets/embedded; " if args.stage == "all" else "")
          + f"measure it with: python benchmarks/embedded_quality.py {model}--pairs 1000 --seed 2026")


if __name__ == "__main__":
    main()
