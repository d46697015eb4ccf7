"""Ground truth of a training batch: what `data.py` produces and `losses.py` consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Targets:
    """Ground truth of a batch: per sample, boxes [N, 4] normalised cxcywh and masks [N, m, m] in [0, 1].

    described: per sample, whether the text names the targets (False for exemplar-only prompts, whose text is
    the placeholder "visual"); None means all do. Only the alignment loss uses it.
    attributes: per sample, int64 [N, A] class indices of each target's attributes, one column per attribute
    head (the concept world's: shape, colour, size and pattern, `ObjectAttributes.indices`); None when unknown.
    Only the attribute loss uses it.
    distill: per sample, whether the teacher's outputs are a target (`Example.distill`); None means all are.
    """

    boxes: list[torch.Tensor]
    masks: list[torch.Tensor]
    described: list[bool] | None = None
    attributes: list[torch.Tensor] | None = None
    distill: list[bool] | None = None

    def described_samples(self) -> list[bool]:
        """Per sample, whether its text names the targets (all of them when `described` is None)."""
        return self.described or [True] * len(self.boxes)

    def distilled_samples(self) -> list[bool]:
        """Per sample, whether the distillation loss scores it: a text that names the targets, on an image the
        teacher knows."""
        distill = self.distill or [True] * len(self.boxes)
        return [text and known for text, known in zip(self.described_samples(), distill)]

    def to(self, device: torch.device) -> Targets:
        attributes = None if self.attributes is None else [a.to(device) for a in self.attributes]
        return Targets([b.to(device) for b in self.boxes], [m.to(device) for m in self.masks], self.described,
                       attributes, self.distill)
