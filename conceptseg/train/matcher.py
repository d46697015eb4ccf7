"""Hungarian matching of predicted queries to ground-truth instances (DETR), with SAM 3's matching costs.

cost = 2 * focal class cost + 5 * L1(cxcywh boxes) + 2 * (-gIoU(xyxy boxes)), focal alpha 0.25, gamma 2.
The cost matrix of the whole batch is computed at once; the assignment is solved per image with scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from conceptseg.model.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

Matching = list[tuple[torch.Tensor, torch.Tensor]]  # per image: (query indices, target indices), both int64


@dataclass(frozen=True)
class MatcherCosts:
    """Weights of the matching cost terms and the focal parameters of the class cost (SAM 3's values)."""

    class_weight: float = 2.0
    l1_weight: float = 5.0
    giou_weight: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


def focal_class_cost(logits: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Cost of calling each query a match [...]: focal loss for label 1 minus focal loss for label 0."""
    prob = logits.sigmoid()
    positive = alpha * (1 - prob) ** gamma * -F.logsigmoid(logits)
    negative = (1 - alpha) * prob**gamma * -F.logsigmoid(-logits)
    return positive - negative


@torch.no_grad()
def hungarian_match(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    target_boxes: list[torch.Tensor],
    costs: MatcherCosts = MatcherCosts(),
) -> Matching:
    """One-to-one assignment of queries to targets for each image.

    logits: [B, Q] class logits; boxes: [B, Q, 4] normalised cxcywh; target_boxes: B tensors [N_b, 4]
    normalised cxcywh (N_b may be 0). Returns, per image, (query indices, target indices) sorted by query,
    each of length min(Q, N_b).
    """
    if len(target_boxes) != logits.shape[0]:
        raise ValueError(f"{len(target_boxes)} target sets for a batch of {logits.shape[0]} predictions")
    sizes = [len(t) for t in target_boxes]
    empty = torch.zeros(0, dtype=torch.long)
    if sum(sizes) == 0:
        return [(empty, empty) for _ in sizes]
    logits, boxes = logits.float(), boxes.float()
    targets = torch.cat(target_boxes).to(boxes)  # T x 4, all images' targets side by side
    class_cost = focal_class_cost(logits, costs.focal_alpha, costs.focal_gamma)[..., None]  # B x Q x 1
    l1_cost = torch.cdist(boxes, targets[None].expand(len(boxes), -1, -1), p=1)  # B x Q x T
    giou_cost = -generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(targets))  # B x Q x T
    cost = costs.class_weight * class_cost + costs.l1_weight * l1_cost + costs.giou_weight * giou_cost
    cost = cost.cpu()
    matches = []
    for image, block in enumerate(cost.split(sizes, dim=-1)):
        if sizes[image] == 0:
            matches.append((empty, empty))
            continue
        queries, targets_index = linear_sum_assignment(block[image].numpy())
        matches.append((torch.as_tensor(queries, dtype=torch.long), torch.as_tensor(targets_index, dtype=torch.long)))
    return matches
