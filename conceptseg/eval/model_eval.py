"""Evaluate a model (not a predictor) over SA-Co GT pairs in batches and score with cgF1: training uses it.

Post-processing is the image predictor's (`conceptseg.predict.image.postprocess`, the official image API, at the
model's mask threshold); predictions with score >= 0.3 are kept (the official dump threshold; cgF1 gates at 0.5
itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from conceptseg.data.batch import model_inputs
from conceptseg.eval import evaluate
from conceptseg.eval.dataset import SacoDataset
from conceptseg.eval.inference import DUMP_THRESHOLD
from conceptseg.io.coco import coco_results
from conceptseg.io.saco_image import ImagePair
from conceptseg.model.sam3 import SAM3
from conceptseg.predict.image import postprocess


def detections_to_coco(
    outputs: dict[str, torch.Tensor], row: int, pair: ImagePair, mask_threshold: float,
    threshold: float = DUMP_THRESHOLD,
) -> list[dict]:
    """COCO results of sample `row` of a `detect` output, for the pair's original image size."""
    masks, boxes, scores = postprocess(outputs, row, (pair.height, pair.width), threshold, mask_threshold)
    return coco_results(masks.cpu().numpy(), boxes.cpu().numpy(), scores.cpu().numpy(), pair.id)


@contextmanager
def evaluating(model: SAM3) -> Iterator[SAM3]:
    """`model` in eval mode and without gradients inside the block, back in its previous mode after it."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def detect_batches(
    model: SAM3, dataset: SacoDataset, batch_size: int = 32
) -> Iterator[tuple[range, dict[str, torch.Tensor]]]:
    """(dataset indices, `detect` output) per batch of `dataset`'s prompts; use inside `evaluating(model)`."""
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(start + batch_size, len(dataset)))
        pixel_values, input_ids, boxes, labels = model_inputs([dataset[i] for i in indices], model.config.vit.image_size)
        yield indices, model.detect(pixel_values.to(model.device), input_ids, boxes, labels)


def batches_to_coco(
    batches: Iterable[tuple[range, dict[str, torch.Tensor]]], dataset: SacoDataset, mask_threshold: float
) -> list[dict]:
    """COCO results of `detect_batches` output, masks binarised at sigmoid > `mask_threshold`."""
    return [
        result
        for indices, outputs in batches
        for row, index in enumerate(indices)
        for result in detections_to_coco(outputs, row, dataset.pairs[index], mask_threshold)
    ]


def predict_dataset(model: SAM3, dataset: SacoDataset, batch_size: int = 32) -> list[dict]:
    """COCO results for every pair of `dataset` (its text or exemplar prompts)."""
    with evaluating(model):
        return batches_to_coco(detect_batches(model, dataset, batch_size), dataset, model.mask_threshold)


def evaluate_model(
    model: SAM3, gt_path: str | Path, image_dir: str | Path, prompt: str = "text", batch_size: int = 32
) -> dict[str, float]:
    """cgF1, IL_MCC, pmF1, ... (see `conceptseg.eval.evaluate`) of `model` on one SA-Co GT file."""
    dataset = SacoDataset(gt_path, image_dir, prompt)
    return evaluate(gt_path, predict_dataset(model, dataset, batch_size))
