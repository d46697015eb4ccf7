"""SA-Co evaluation: cgF1 / IL_MCC / pmF1 for images and videos, and phrase HOTA for videos.

The file formats it reads live in `conceptseg.io` (`saco_image`, `saco_video`); `dataset` turns GT files into
examples and `model_eval` scores a model over them in batches (training's periodic evaluation).

    results = conceptseg.eval.evaluate(["gold_a.json", "gold_b.json", "gold_c.json"], "predictions.json")
    results["cgF1"], results["box_cgF1"]
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from conceptseg.eval.image_eval import evaluate_images
from conceptseg.eval.inference import run_image_inference
from conceptseg.eval.video_eval import evaluate_videos
from conceptseg.io.records import PathLike


def evaluate(
    gt_files: PathLike | Sequence[PathLike], pred_file: PathLike | list[dict], video: bool = False
) -> dict[str, float]:
    """Score predictions on SA-Co and return {metric name: value}.

    Images: `gt_files` are SA-Co image GT files (several for the Gold oracle) and `pred_file` COCO results.
    Videos (`video=True`): one VEval GT file and YT-VIS results. `pred_file` may also be an already loaded
    list of result dicts. cgF1 keys are on a 0-100 scale, the rest are fractions; box metrics carry a
    `box_` prefix and video runs add pHOTA, pDetA and pAssA.
    """
    paths = [gt_files] if isinstance(gt_files, (str, os.PathLike)) else list(gt_files)
    if not video:
        return evaluate_images(paths, pred_file)
    if len(paths) != 1:
        raise ValueError(f"video evaluation takes one GT file, got {len(paths)}")
    return evaluate_videos(paths[0], pred_file)


__all__ = ["evaluate", "evaluate_images", "evaluate_videos", "run_image_inference"]
