"""`Example`: one image, a prompt, and every instance the prompt refers to, as arrays (torch-free).

Training, evaluation and the research probes all speak this one record: the concept world's `Sample` becomes
one with `example_from_sample`, an SA-Co pair with `conceptseg.eval.dataset.SacoDataset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from conceptseg.data.synthetic_phrases import ATTRIBUTE_VOCABULARIES

if TYPE_CHECKING:  # the concept world builds on this module, not the other way round
    from conceptseg.data.synthetic import Sample


def empty_boxes() -> np.ndarray:
    """float32 [0, 4]: no boxes."""
    return np.zeros((0, 4), dtype=np.float32)


def empty_labels() -> np.ndarray:
    """bool [0]: no labels."""
    return np.zeros(0, dtype=bool)


@dataclass
class Example:
    """One training or evaluation example: an image, a prompt, and every instance the prompt refers to.

    image: uint8 [H, W, 3]; masks: bool [N, H, W]; boxes: float32 [N, 4] xyxy pixels (N = 0: a negative).
    prompt_boxes / prompt_labels: exemplar boxes [K, 4] xyxy pixels and bool labels [K] (True = positive).
    distractor_boxes: [M, 4] xyxy boxes of objects the prompt does not refer to, where known (sources of
    negative exemplars).
    attributes: int64 [N, 4] each target's shape, colour, size and pattern as vocabulary indices
    (`ObjectAttributes.indices`), where known (concept-world data).
    prompt_image: uint8 [H', W', 3], the image the prompt boxes are drawn on when it is not `image` (exemplars
    across images).
    distill: whether a teacher model's outputs on this example are a training target (distillation); False
    for images drawn in styles the teacher never saw, where only the labels teach.
    """

    image: np.ndarray
    phrase: str
    masks: np.ndarray
    boxes: np.ndarray
    prompt_boxes: np.ndarray = field(default_factory=empty_boxes)
    prompt_labels: np.ndarray = field(default_factory=empty_labels)
    distractor_boxes: np.ndarray = field(default_factory=empty_boxes)
    attributes: np.ndarray | None = None
    prompt_image: np.ndarray | None = None
    distill: bool = True


def example_from_sample(sample: Sample) -> Example:
    """A concept-world sample as an `Example`; its exemplar boxes, if any, become the prompt boxes."""
    others = np.setdiff1d(np.arange(len(sample.instances)), sample.target_indices)
    attributes = np.array([sample.instances[i].indices for i in sample.target_indices], dtype=np.int64)
    attributes = attributes.reshape(-1, len(ATTRIBUTE_VOCABULARIES))  # [0, 4] for a negative
    return Example(sample.image, sample.phrase, sample.masks, sample.boxes, sample.exemplar_boxes,
                   sample.exemplar_labels, sample.instance_boxes[others], attributes)
