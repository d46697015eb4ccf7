"""Interactive tracking: one positive click at an object's centre (or its box) on frame 0, tracked through
held-out concept-world clips by `VideoPredictor` (the inference path).

    python benchmarks/embedded_click_tracking.py [--model M] [--clips 100] [--frames 16] [--seed 4049]

Each clip follows one object visible on frame 0 (any object, as in tracker training), from split "test"
with a seed training never uses (training evaluates on seed 1). Printed per prompt: the mean IoU of the
tracked mask with the ground truth over the later frames where the object shows (target >= 0.75 for the
click), the frame-0 IoU, and the share of frames where the object is absent with no mask for it.
"""

from __future__ import annotations

import argparse
import time

import torch

from conceptseg import load_model
from conceptseg.data.synthetic import ConceptWorld
from conceptseg.train.tracker_data import TrackerSource
from conceptseg.train.tracker_trainer import evaluate_tracking, tracking_eval_set

WORLD_SIZE = 224


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="weights (default: the embedded model)")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seed", type=int, default=4049)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    world = ConceptWorld(size=WORLD_SIZE, split="test", seed=args.seed)
    examples = tracking_eval_set(TrackerSource(world, seed=args.seed, num_frames=args.frames), args.clips)
    started = time.perf_counter()
    results = evaluate_tracking(model, examples)
    elapsed = time.perf_counter() - started
    print(f"{args.clips} clips x {args.frames} frames (seed {args.seed}), {elapsed:.0f} s")
    for prompt, metrics in results.items():
        absent = "n/a" if metrics["absent_accuracy"] is None else f"{metrics['absent_accuracy']:.3f}"
        print(f"  {prompt:5s}: later-frame IoU {metrics['iou']:.3f}, frame-0 IoU {metrics['first_iou']:.3f}, "
              f"absent frames without a mask {absent}")


if __name__ == "__main__":
    main()
