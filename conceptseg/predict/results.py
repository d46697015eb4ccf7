"""Prediction results at the original image size, with COCO/supervision export and a visual overlay."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw

from conceptseg.io.coco import coco_results
from conceptseg.io.overlay import draw_labelled_boxes, instance_colour


@dataclass
class Results:
    """Instances found in one image for one prompt, sorted by score (highest first).

    masks: [N, H, W] bool at the original image size; boxes: [N, 4] float32 XYXY in original-image pixels;
    scores: [N] float32 in [0, 1]; prompt: what was asked (text and/or exemplars); image_size: (H, W).
    """

    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    prompt: dict[str, Any]
    image_size: tuple[int, int]
    image: np.ndarray | None = field(default=None, repr=False)  # the RGB uint8 input, for plot()
    low_res_logits: Any = field(default=None, repr=False)  # interactive masks: [K, 4G, 4G] logits for mask_input

    def __len__(self) -> int:
        return len(self.scores)

    def to_coco(self, image_id: int | str, category_id: int = 1) -> list[dict[str, Any]]:
        """COCO result dicts: compressed RLE segmentation (counts as str), bbox XYWH pixels, score, area."""
        return coco_results(self.masks, self.boxes, self.scores, image_id, category_id)

    def to_supervision(self):
        """A `supervision.Detections` (needs `pip install supervision`)."""
        try:
            import supervision
        except ImportError as error:
            raise ImportError("to_supervision() needs the supervision package: pip install supervision") from error
        return supervision.Detections(
            xyxy=self.boxes.astype(np.float32), mask=self.masks, confidence=self.scores.astype(np.float32),
            class_id=np.zeros(len(self), dtype=int),
        )

    def plot(self, image: np.ndarray | None = None, alpha: float = 0.5) -> np.ndarray:
        """RGB uint8 overlay: each instance in its own colour, with its box and score."""
        return draw_overlay(self.image if image is None else image, [self], alpha)

    def save(self, path: str | Path) -> Path:
        """Write the overlay (format from the file suffix, e.g. .png or .jpg)."""
        path = Path(path)
        PIL.Image.fromarray(self.plot()).save(path)
        return path


def draw_overlay(image: np.ndarray | None, results: list[Results], alpha: float = 0.5) -> np.ndarray:
    """Overlay the instances of several results (e.g. one per phrase) on one image."""
    if image is None:
        raise ValueError("no image to draw on: pass the RGB image to plot(image)")
    canvas = image.astype(np.float32).copy()
    labels = []
    index = 0
    for result in results:
        name = result.prompt.get("text") or "exemplar"
        for mask, box, score in zip(result.masks, result.boxes, result.scores):
            colour = np.array(instance_colour(index), dtype=np.float32)
            canvas[mask] = canvas[mask] * (1 - alpha) + colour * alpha
            labels.append((box, f"{name} {score:.2f}", tuple(int(c) for c in colour)))
            index += 1
    return draw_labelled_boxes(canvas.round().clip(0, 255).astype(np.uint8), labels)
