"""Hungarian matcher: optimal, batched = per image, empty targets."""

import itertools

import pytest
import torch

from conceptseg.model.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from conceptseg.train.matcher import MatcherCosts, focal_class_cost, hungarian_match


def random_boxes(count: int, generator: torch.Generator) -> torch.Tensor:
    centres = torch.rand(count, 2, generator=generator) * 0.6 + 0.2
    sizes = torch.rand(count, 2, generator=generator) * 0.3 + 0.05
    return torch.cat((centres, sizes), dim=1)


def pair_cost(logit: torch.Tensor, box: torch.Tensor, target: torch.Tensor, costs: MatcherCosts) -> float:
    """The matching cost of one (query, target) pair, written out term by term."""
    prob = logit.sigmoid()
    positive = -costs.focal_alpha * (1 - prob) ** costs.focal_gamma * prob.log()
    negative = -(1 - costs.focal_alpha) * prob**costs.focal_gamma * (1 - prob).log()
    giou = generalized_box_iou(box_cxcywh_to_xyxy(box[None]), box_cxcywh_to_xyxy(target[None]))[0, 0]
    return float(costs.class_weight * (positive - negative) + costs.l1_weight * (box - target).abs().sum()
                 - costs.giou_weight * giou)


def test_assignment_is_optimal_by_brute_force():
    generator = torch.Generator().manual_seed(0)
    costs = MatcherCosts()
    for num_queries, num_targets in ((5, 3), (4, 4), (6, 1)):
        logits = torch.randn(1, num_queries, generator=generator)
        boxes = random_boxes(num_queries, generator)[None]
        targets = random_boxes(num_targets, generator)
        queries, target_index = hungarian_match(logits, boxes, [targets], costs)[0]
        found = sum(pair_cost(logits[0, q], boxes[0, q], targets[t], costs) for q, t in zip(queries, target_index))
        best = min(
            sum(pair_cost(logits[0, q], boxes[0, q], targets[t], costs) for t, q in enumerate(chosen))
            for chosen in itertools.permutations(range(num_queries), num_targets)
        )
        assert found == pytest.approx(best, abs=1e-4)
        assert sorted(target_index.tolist()) == list(range(num_targets))


def test_recovers_a_permutation_of_the_targets():
    generator = torch.Generator().manual_seed(1)
    targets = random_boxes(4, generator)
    boxes = random_boxes(10, generator)
    boxes[[7, 2, 9, 0]] = targets  # queries 7, 2, 9, 0 predict targets 0..3 exactly
    queries, target_index = hungarian_match(torch.zeros(1, 10), boxes[None], [targets])[0]
    assert dict(zip(queries.tolist(), target_index.tolist())) == {7: 0, 2: 1, 9: 2, 0: 3}


def test_batched_equals_per_image():
    generator = torch.Generator().manual_seed(2)
    counts = [3, 0, 5, 1, 8]
    logits = torch.randn(len(counts), 8, generator=generator)
    boxes = torch.stack([random_boxes(8, generator) for _ in counts])
    targets = [random_boxes(count, generator) for count in counts]
    batched = hungarian_match(logits, boxes, targets)
    for image, (queries, target_index) in enumerate(batched):
        alone_queries, alone_targets = hungarian_match(logits[image:image + 1], boxes[image:image + 1], [targets[image]])[0]
        assert torch.equal(queries, alone_queries) and torch.equal(target_index, alone_targets)
        assert len(queries) == counts[image]


def test_empty_targets_give_empty_matches():
    logits, boxes = torch.randn(3, 6), random_boxes(18, torch.Generator().manual_seed(3)).view(3, 6, 4)
    matches = hungarian_match(logits, boxes, [torch.zeros(0, 4)] * 3)
    assert all(len(q) == 0 and len(t) == 0 and q.dtype == torch.long for q, t in matches)


def test_more_targets_than_queries_matches_every_query():
    generator = torch.Generator().manual_seed(4)
    queries, target_index = hungarian_match(torch.randn(1, 3), random_boxes(3, generator)[None],
                                            [random_boxes(5, generator)])[0]
    assert queries.tolist() == [0, 1, 2] and len(set(target_index.tolist())) == 3


def test_class_cost_prefers_confident_queries():
    cost = focal_class_cost(torch.tensor([-4.0, 0.0, 4.0]), alpha=0.25, gamma=2.0)
    assert cost[0] > cost[1] > cost[2]


def test_batch_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="target sets"):
        hungarian_match(torch.zeros(2, 4), torch.rand(2, 4, 4), [torch.zeros(0, 4)])
