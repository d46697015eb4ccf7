"""Score recalibration folded into the weights (Platt scaling without new parameters).

A detection is kept when sigmoid(query logit) x sigmoid(presence logit) >= 0.5, and cgF1 gates at that same
0.5. A small model trained from scratch with focal losses ranks well but stays under-confident: both factors sit
near 0.5, so their product rarely passes. `calibrate` grid-searches a scale of the query logits and a shift of
the presence logit for the best cgF1 on a given benchmark (use training-distribution data, never the test set);
`recalibrated` folds them into the scorer's query projection and the presence head's last bias. The model runs
once: only the scores change between grid points, so each point re-scores the stored outputs.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from conceptseg.eval import evaluate
from conceptseg.model.sam3 import SAM3
from conceptseg.train.evaluation import batches_to_coco, detect_batches, evaluating
from conceptseg.train.saco import SacoDataset

QUERY_SCALES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
PRESENCE_SHIFTS = (-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
SCORING_KEYS = ("pred_logits", "presence_logits", "pred_boxes", "pred_masks")


def recalibrated(model: SAM3, query_scale: float, presence_shift: float) -> SAM3:
    """A copy of `model` whose query logits are multiplied by `query_scale` (before the scorer's clamp) and
    whose presence logits are shifted by `presence_shift`. A positive scale keeps the two-stage ranking."""
    if query_scale <= 0:
        raise ValueError(f"query_scale must be positive, got {query_scale}")
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.detector.scorer.hs_proj.weight.mul_(query_scale)
        model.detector.scorer.hs_proj.bias.mul_(query_scale)
        model.detector.decoder.presence_token_head.layers[-1].bias.add_(presence_shift)
    return model


def rescored(
    outputs: dict[str, torch.Tensor], query_scale: float, presence_shift: float, clamp: float
) -> dict[str, torch.Tensor]:
    """`outputs` as `recalibrated` would have produced them; exact for query_scale >= 1 (the clamp commutes)."""
    return outputs | {
        "pred_logits": (outputs["pred_logits"] * query_scale).clamp(-clamp, clamp),
        "presence_logits": outputs["presence_logits"] + presence_shift,
    }


def calibrate(
    model: SAM3,
    gt_path: str | Path,
    image_dir: str | Path,
    query_scales: Sequence[float] = QUERY_SCALES,
    presence_shifts: Sequence[float] = PRESENCE_SHIFTS,
    report: Callable[[float, float, dict[str, float]], None] | None = None,
) -> tuple[float, float, float]:
    """(query_scale, presence_shift, cgF1) of the grid point with the best cgF1 on the benchmark (scales >= 1).

    Every pair's mask logits are held in memory between grid points: meant for a few hundred pairs of a small model.
    """
    if min(query_scales) < 1:
        raise ValueError(f"query scales must be >= 1, got {min(query_scales)}")
    dataset = SacoDataset(gt_path, image_dir, "text")
    with evaluating(model):
        batches = [(indices, {key: outputs[key] for key in SCORING_KEYS})
                   for indices, outputs in detect_batches(model, dataset)]
    clamp = model.config.scorer_clamp
    cgf1 = {}
    for scale, shift in itertools.product(query_scales, presence_shifts):
        points = [(indices, rescored(outputs, scale, shift, clamp)) for indices, outputs in batches]
        metrics = evaluate(gt_path, batches_to_coco(points, dataset))
        if report is not None:
            report(scale, shift, metrics)
        cgf1[scale, shift] = metrics["cgF1"]
    scale, shift = max(cgf1, key=cgf1.get)  # the first of equals, in grid order
    return scale, shift, cgf1[scale, shift]
