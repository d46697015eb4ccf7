"""Prompts in the public API's terms (pixels of the original image) -> what the model takes.

Shared by the image and video predictors: phrase checks, a bounded cache of text encodings, exemplar boxes and
points validated and normalised, and mask logits upsampled to the original size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from conceptseg.model.box_ops import normalized_cxcywh_to_pixel_xyxy, pixel_xyxy_to_normalized_cxcywh
from conceptseg.model.detector import TextEncoding
from conceptseg.model.sam3 import SAM3
from conceptseg.model.tokenizer import EXEMPLAR_TEXT, tokenize

MAX_PHRASES = 1000
TEXT_CACHE_SIZE = 256  # phrases whose encodings are kept (LRU); one is a few KB at full size


def check_phrases(texts: Sequence[str | None], exemplars: bool) -> list[str]:
    """The phrases of a call; None (exemplar-only) becomes the placeholder text when exemplars are given."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError("texts must be a list of phrases")
    if not texts:
        raise ValueError("no phrases given")
    if len(texts) > MAX_PHRASES:
        raise ValueError(f"{len(texts)} phrases in one call; at most {MAX_PHRASES} (split them into chunks)")
    phrases = []
    for text in texts:
        if text is None:
            if not exemplars:
                raise ValueError("an empty prompt: give a text, exemplar boxes or points")
            text = EXEMPLAR_TEXT
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text prompts must be non-empty strings, got {text!r}")
        phrases.append(text)
    return phrases


class TextCache:
    """Text encodings of recently used phrases, least recently used dropped first (`size` at most)."""

    def __init__(self, size: int = TEXT_CACHE_SIZE) -> None:
        self.size = size
        self._encodings: OrderedDict[str, TextEncoding] = OrderedDict()

    def __len__(self) -> int:
        return len(self._encodings)

    def phrases(self) -> list[str]:
        """Cached phrases, least recently used first."""
        return list(self._encodings)

    def encode(self, model: SAM3, phrases: list[str]) -> TextEncoding:
        """The encodings of `phrases` (a batch in their order), encoding only the phrases not cached."""
        known = {p: self._encodings[p] for p in dict.fromkeys(phrases) if p in self._encodings}
        new = [p for p in dict.fromkeys(phrases) if p not in known]
        if new:
            encoded = model.encode_text(tokenize(new, model.config.text.context_length))
            known |= {phrase: encoded.select(torch.tensor([i])) for i, phrase in enumerate(new)}
        for phrase in dict.fromkeys(phrases):  # most recently used last; the oldest go first
            self._encodings[phrase] = known[phrase]
            self._encodings.move_to_end(phrase)
        while len(self._encodings) > self.size:
            self._encodings.popitem(last=False)
        parts = [known[p] for p in phrases]
        return TextEncoding(torch.cat([p.tokens for p in parts]), torch.cat([p.padding for p in parts]))


def detector_geometry(boxes: Any, box_labels: Any, points: Any, point_labels: Any,
                      size: tuple[int, int]) -> dict[str, Any]:
    """Exemplar boxes (XYXY pixels) and points ((x, y) pixels) of a height x width image -> the keyword
    arguments of `SAM3.detect` (normalised cxcywh boxes and xy points, batch of one)."""
    height, width = size
    geometry: dict[str, Any] = {}
    if boxes is not None:
        xyxy = as_boxes(boxes, size)
        geometry["boxes"] = pixel_xyxy_to_normalized_cxcywh(xyxy, height, width)[None]
        geometry["box_labels"] = as_labels(box_labels, len(xyxy), "box_labels")[None]
    if points is not None:
        coords, labels = as_points(points, point_labels, size)
        geometry["points"] = (coords / torch.tensor([width, height], dtype=torch.float32))[None]
        geometry["point_labels"] = labels[None]
    return geometry


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Low-res mask logits [N, h, w] -> [N, H, W] float32, bilinear (align_corners=False); N may be 0."""
    if len(logits) == 0:
        return logits.new_zeros((0, *size), dtype=torch.float32)
    return F.interpolate(logits.float()[None], size=size, mode="bilinear", align_corners=False)[0]


def as_boxes(boxes: Any, size: tuple[int, int]) -> torch.Tensor:
    """XYXY pixel boxes -> float [K, 4], clipped to the image; boxes with no area inside it are an error."""
    height, width = size
    xyxy = torch.as_tensor(np.asarray(boxes, dtype=np.float64), dtype=torch.float32)
    if xyxy.dim() == 1:
        xyxy = xyxy[None]
    if xyxy.dim() != 2 or xyxy.shape[1] != 4 or len(xyxy) == 0:
        raise ValueError(f"boxes must be [K, 4] XYXY pixels, got shape {tuple(xyxy.shape)}")
    if not torch.isfinite(xyxy).all():
        raise ValueError("boxes must be finite numbers")
    clipped = torch.stack([xyxy[:, 0].clamp(0, width), xyxy[:, 1].clamp(0, height),
                           xyxy[:, 2].clamp(0, width), xyxy[:, 3].clamp(0, height)], dim=1)
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if empty.any():
        bad = xyxy[empty][0].tolist()
        raise ValueError(f"box {bad} has no area inside the {width}x{height} image (boxes are x1, y1, x2, y2 pixels)")
    return clipped


def as_points(points: Any, labels: Any, size: tuple[int, int]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(x, y) pixel points [P, 2] inside the image and their labels [P] (default all positive)."""
    if points is None:
        if labels is not None:
            raise ValueError("point_labels given without points")
        return None, None
    height, width = size
    coords = torch.as_tensor(np.asarray(points, dtype=np.float64), dtype=torch.float32).reshape(-1, 2)
    if len(coords) == 0 or not torch.isfinite(coords).all():
        raise ValueError("points must be a non-empty [P, 2] list of finite (x, y) pixels")
    outside = (coords[:, 0] < 0) | (coords[:, 0] > width) | (coords[:, 1] < 0) | (coords[:, 1] > height)
    if outside.any():
        raise ValueError(f"point {coords[outside][0].tolist()} lies outside the {width}x{height} image")
    return coords, as_labels(labels, len(coords), "point_labels")


def as_labels(labels: Any, count: int, name: str) -> torch.Tensor:
    """Labels [count]: 1 positive, 0 negative (default all positive)."""
    if labels is None:
        return torch.ones(count, dtype=torch.long)
    values = torch.as_tensor(np.asarray(labels)).reshape(-1).long()
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries for {count} prompts")
    if not torch.isin(values, torch.tensor([0, 1])).all():
        raise ValueError(f"{name} must be 1 (positive) or 0 (negative)")
    return values


def describe_geometry(geometry: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """The exemplars of a prompt, back in XYXY pixels, for Results.prompt."""
    described: dict[str, Any] = {}
    height, width = size
    if "boxes" in geometry:
        described["boxes"] = normalized_cxcywh_to_pixel_xyxy(geometry["boxes"][0], height, width).tolist()
        described["box_labels"] = geometry["box_labels"][0].tolist()
    if "points" in geometry:
        described["points"] = (geometry["points"][0] * torch.tensor([width, height])).tolist()
        described["point_labels"] = geometry["point_labels"][0].tolist()
    return described
