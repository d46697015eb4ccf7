"""Recalibrate a trained model's scores (folded into its weights) and mask threshold on fresh training-split data.

    python tools/calibrate_scores.py runs/NAME/model runs/NAME/calibrated [--pairs 200] [--query-scales 1 2 ...]

See `conceptseg.train.calibration`. The benchmark is drawn from the concept world's *training* split (which holds
no held-out colour-shape pair) with a seed the training never used, so no test scene takes part.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from conceptseg import load_model, save_model
from conceptseg.data import export_saco_image_benchmark
from conceptseg.train.calibration import (
    MASK_THRESHOLDS,
    PRESENCE_SHIFTS,
    QUERY_SCALES,
    calibrate,
    recalibrated,
)

CALIBRATION_SEED = 3  # the embedded model's runs drew split "train" with seeds 0-2 and 4-9; another stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a trained model directory (e.g. runs/NAME/model)")
    parser.add_argument("out", type=Path, help="where to write the recalibrated model")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--query-scales", type=float, nargs="+", default=QUERY_SCALES, help="grid of query-logit scales")
    parser.add_argument("--presence-shifts", type=float, nargs="+", default=PRESENCE_SHIFTS,
                        help="grid of presence-logit shifts")
    parser.add_argument("--mask-thresholds", type=float, nargs="+", default=MASK_THRESHOLDS,
                        help="mask thresholds tried at the best scale and shift (after the model's own)")
    args = parser.parse_args()
    model = load_model(args.model).eval()

    def report(scale: float, shift: float, mask_threshold: float, metrics: dict[str, float]) -> None:
        print(f"query scale {scale:.1f}  presence shift {shift:+.1f}  mask threshold {mask_threshold:.2f}  "
              f"cgF1 {metrics['cgF1']:6.2f} (IL_MCC {metrics['IL_MCC']:.3f}, pmF1 {metrics['pmF1']:.3f})", flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        gt = export_saco_image_benchmark(Path(scratch), args.pairs, CALIBRATION_SEED, split="train")
        best = calibrate(model, gt, gt.parent / "images", args.query_scales, args.presence_shifts,
                         args.mask_thresholds, report)
    save_model(recalibrated(model, best.query_scale, best.presence_shift, best.mask_threshold), args.out)
    print(f"best: query scale {best.query_scale}, presence shift {best.presence_shift:+}, mask threshold "
          f"{best.mask_threshold}, cgF1 {best.cgf1:.2f} on {args.pairs} training-split pairs; written to {args.out}")


if __name__ == "__main__":
    main()
