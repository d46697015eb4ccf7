"""Loss terms: focal and dice values, positives-only classification, presence on all samples, mask sizes."""

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss as torchvision_focal_loss

from conceptseg.model.common import inverse_sigmoid
from conceptseg.train.losses import (
    AttributeHeads,
    LossBatch,
    LossWeights,
    SetCriterion,
    bernoulli_kl,
    dice_loss,
    sigmoid_focal_loss,
)
from conceptseg.train.targets import Targets

QUERIES, LAYERS, MASK = 6, 2, 8


def outputs_for(batch: int, generator: torch.Generator, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """Random detector outputs with the layout of `SAM3.detect`."""
    centres = torch.rand(LAYERS, batch, QUERIES, 2, generator=generator) * 0.6 + 0.2
    sizes = torch.rand(LAYERS, batch, QUERIES, 2, generator=generator) * 0.3 + 0.1
    outputs = {
        "all_logits": torch.randn(LAYERS, batch, QUERIES, generator=generator),
        "all_boxes": torch.cat((centres, sizes), dim=-1),
        "all_presence_logits": torch.randn(LAYERS, batch, 1, generator=generator),
        "pred_masks": torch.randn(batch, QUERIES, MASK, MASK, generator=generator),
        "semantic_seg": torch.randn(batch, 1, MASK, MASK, generator=generator),
    }
    return {k: v.requires_grad_(requires_grad) for k, v in outputs.items()}


def targets_for(counts: list[int], generator: torch.Generator, mask_size: int = MASK) -> Targets:
    boxes = [torch.cat((torch.rand(n, 2, generator=generator) * 0.6 + 0.2, torch.rand(n, 2, generator=generator) * 0.3
                        + 0.1), dim=1) for n in counts]
    masks = [(torch.rand(n, mask_size, mask_size, generator=generator) > 0.5).float() for n in counts]
    return Targets(boxes, masks)


def test_focal_loss_matches_torchvision():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=generator) * 3
    targets = torch.rand(50, generator=generator).round()
    ours = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0)
    torch.testing.assert_close(ours, torchvision_focal_loss(logits, targets, alpha=0.25, gamma=2.0))


def test_dice_loss_is_zero_for_a_perfect_mask_and_near_one_for_the_complement():
    target = (torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    assert dice_loss((target * 2 - 1) * 30, target).item() == pytest.approx(0.0, abs=1e-3)
    assert dice_loss((1 - 2 * target) * 30, target).item() > 0.99


def test_negatives_get_presence_loss_but_no_classification_loss():
    generator = torch.Generator().manual_seed(2)
    outputs = outputs_for(2, generator, requires_grad=True)
    targets = targets_for([3, 0], generator)
    loss, terms = SetCriterion()(outputs, targets)
    loss.backward()
    logit_grad = outputs["all_logits"].grad
    assert logit_grad[:, 1].abs().sum() == 0  # sample 1 is a negative: its query logits are not supervised
    assert logit_grad[:, 0].abs().sum() > 0
    assert outputs["all_presence_logits"].grad[:, 1].abs().sum() > 0
    assert outputs["pred_masks"].grad[1].abs().sum() == 0
    assert terms["classification"] > 0 and terms["presence"] > 0


def test_all_negative_batch_is_finite_and_trains_presence():
    generator = torch.Generator().manual_seed(3)
    outputs = outputs_for(3, generator, requires_grad=True)
    loss, terms = SetCriterion()(outputs, targets_for([0, 0, 0], generator))
    loss.backward()
    assert torch.isfinite(loss)
    assert terms["classification"] == 0 and terms["box_l1"] == 0 and terms["mask_dice"] == 0
    assert outputs["all_presence_logits"].grad.abs().sum() > 0


def test_perfect_predictions_score_lower_than_random_ones():
    generator = torch.Generator().manual_seed(4)
    targets = targets_for([2, 1], generator)
    random_outputs = outputs_for(2, generator)
    perfect = {k: v.clone() for k, v in random_outputs.items()}
    perfect["all_logits"].fill_(-8.0)
    perfect["all_presence_logits"].fill_(8.0)
    for image, (boxes, masks) in enumerate(zip(targets.boxes, targets.masks)):
        perfect["all_boxes"][:, image, : len(boxes)] = boxes
        perfect["all_logits"][:, image, : len(boxes)] = 8.0
        perfect["pred_masks"][image, : len(masks)] = (masks * 2 - 1) * 20
        perfect["semantic_seg"][image, 0] = (masks.amax(0) * 2 - 1) * 20
    criterion = SetCriterion()
    perfect_loss, terms = criterion(perfect, targets)
    random_loss, _ = criterion(random_outputs, targets)
    assert perfect_loss < 0.05 * random_loss
    assert terms["box_l1"] == pytest.approx(0.0, abs=1e-6) and terms["box_giou"] == pytest.approx(0.0, abs=1e-6)


def test_every_decoder_layer_is_supervised():
    generator = torch.Generator().manual_seed(5)
    outputs = outputs_for(2, generator, requires_grad=True)
    loss, _ = SetCriterion()(outputs, targets_for([2, 1], generator))
    loss.backward()
    for name in ("all_logits", "all_boxes", "all_presence_logits"):
        assert all(outputs[name].grad[layer].abs().sum() > 0 for layer in range(LAYERS)), name


def test_masks_are_scored_under_the_last_decoder_layers_matching_and_its_terms_are_logged():
    generator = torch.Generator().manual_seed(8)
    outputs = outputs_for(1, generator)
    left, right = torch.zeros(MASK, MASK), torch.zeros(MASK, MASK)
    left[:, : MASK // 2], right[:, MASK // 2:] = 1.0, 1.0
    targets = Targets([torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])], [torch.stack((left, right))])
    outputs["all_logits"][:, 0] = torch.tensor([8.0, 8.0, -8.0, -8.0, -8.0, -8.0])
    outputs["all_boxes"][:, 0, 2:] = torch.tensor([0.5, 0.5, 0.05, 0.05])
    # layer 0 holds the targets in queries (0, 1), slightly off; the last layer exactly, in queries (1, 0)
    outputs["all_boxes"][0, 0, :2] = targets.boxes[0] + 0.02
    outputs["all_boxes"][-1, 0, :2] = targets.boxes[0].flip(0)
    outputs["pred_masks"][0, :2] = (torch.stack((right, left)) * 2 - 1) * 20  # the last layer's order
    _, terms = SetCriterion()(outputs, targets)
    assert terms["mask_dice"] < 0.01
    assert terms["box_l1"] == pytest.approx(0.0, abs=1e-6)  # logged: the last layer's terms


def test_logged_terms_keep_their_names_and_order():
    generator = torch.Generator().manual_seed(10)
    outputs = detections_for(2, generator)
    outputs |= alignment_case(torch.rand(2, 8, generator=generator), torch.rand(2, 8, generator=generator))
    targets = targets_for([2, 1], generator)
    targets.attributes = [torch.zeros(2, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long)]
    base = ["classification", "presence", "box_l1", "box_giou", "mask_focal", "mask_dice", "semantic"]
    assert list(SetCriterion()(outputs, targets)[1]) == [*base, "loss"]
    heads = AttributeHeads(width=8, classes={"shape": 3, "colour": 2})
    criterion = SetCriterion(LossWeights(alignment=1.0, attribute=1.0, distillation=1.0), attribute_heads=heads)
    assert list(criterion(outputs, targets, outputs)[1]) == [
        *base, "alignment", "attribute", "shape_accuracy", "colour_accuracy", "distillation", "loss"]


def test_mask_targets_larger_than_predictions_are_compared_after_upsampling():
    generator = torch.Generator().manual_seed(6)
    outputs = outputs_for(1, generator, requires_grad=True)
    blob = torch.zeros(1, MASK, MASK)
    blob[:, 2:7, 1:6] = 1
    coarse = Targets(targets_for([1], generator).boxes, [blob])
    fine = Targets(coarse.boxes, [blob.repeat_interleave(2, -1).repeat_interleave(2, -2)])
    outputs["pred_masks"].data[0, :] = inverse_sigmoid(blob[0] * 0.98 + 0.01)
    _, coarse_terms = SetCriterion()(outputs, coarse)
    _, fine_terms = SetCriterion()(outputs, fine)
    assert fine_terms["mask_dice"] == pytest.approx(coarse_terms["mask_dice"], abs=0.05)
    assert fine_terms["mask_dice"] < 0.1


def test_loss_weights_scale_their_terms():
    generator = torch.Generator().manual_seed(7)
    outputs, targets = outputs_for(2, generator), targets_for([1, 0], generator)
    base, terms = SetCriterion(LossWeights())(outputs, targets)
    heavier, _ = SetCriterion(LossWeights(semantic=LossWeights().semantic + 1.0))(outputs, targets)
    assert float(heavier - base) == pytest.approx(terms["semantic"], rel=1e-4)


def alignment_case(region_features: torch.Tensor, phrase_features: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs whose image tokens hold `region_features[i]` inside sample i's target (a 2x2 token block)."""
    batch, channels = phrase_features.shape
    tokens = torch.zeros(batch, 4, 4, channels)
    tokens[:, :2, :2] = region_features[:, None, None]
    return {
        "image_tokens": tokens.flatten(1, 2),
        "text_tokens": torch.stack((phrase_features, phrase_features, torch.zeros_like(phrase_features)), dim=1),
        "text_padding": torch.tensor([[False, False, True]] * batch),
    }


def alignment_loss(criterion: SetCriterion, outputs: dict[str, torch.Tensor], targets: Targets) -> torch.Tensor:
    """The alignment loss alone (it uses no matching)."""
    return criterion.loss_alignment(outputs, [], LossBatch.of(targets, torch.device("cpu")))["alignment"]


def test_alignment_loss_pairs_each_target_region_with_its_own_phrase():
    criterion = SetCriterion(LossWeights(alignment=1.0))
    phrases = torch.eye(3, 8) + 0.1
    masks = [torch.zeros(1, MASK, MASK) for _ in range(3)]
    for mask in masks:
        mask[0, : MASK // 2, : MASK // 2] = 1.0  # the top-left quarter = the 2x2 token block
    targets = Targets([torch.rand(1, 4)] * 3, masks)
    matched = alignment_loss(criterion, alignment_case(phrases, phrases), targets)
    swapped = alignment_loss(criterion, alignment_case(phrases.roll(1, 0), phrases), targets)
    assert matched < 0.01 < 1.0 < swapped
    # an exemplar-only sample ("visual") and a negative give no pair; the rest stay as they were
    partial = Targets(targets.boxes, [masks[0], masks[1], torch.zeros(0, MASK, MASK)], described=[True, False, True])
    one_pair = alignment_loss(criterion, alignment_case(phrases.roll(1, 0), phrases), partial)
    assert one_pair == pytest.approx(float(torch.nn.functional.cross_entropy(
        (torch.nn.functional.normalize(phrases.roll(1, 0)[:1], dim=-1) @ torch.nn.functional.normalize(phrases, dim=-1).T)
        / 0.1, torch.tensor([0]))), rel=1e-5)


def test_alignment_loss_ignores_a_repeated_phrase_as_a_wrong_answer():
    criterion = SetCriterion(LossWeights(alignment=1.0))
    phrases = torch.stack((torch.eye(8)[0], torch.eye(8)[0]))  # two samples, the same phrase
    masks = [torch.ones(1, MASK, MASK), torch.ones(1, MASK, MASK)]
    loss = alignment_loss(criterion, alignment_case(phrases, phrases), Targets([torch.rand(1, 4)] * 2, masks))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_attribute_loss_classifies_each_target_from_its_own_region():
    generator = torch.Generator().manual_seed(7)
    outputs = outputs_for(2, generator)
    tokens = torch.zeros(2, 4, 4, 8)
    tokens[0, :, :2, 0] = 1.0  # sample 0: feature e0 on the left half, e1 on the right half
    tokens[0, :, 2:, 1] = 1.0
    outputs["image_tokens"] = tokens.flatten(1, 2)
    left, right = torch.zeros(MASK, MASK), torch.zeros(MASK, MASK)
    left[:, : MASK // 2], right[:, MASK // 2:] = 1.0, 1.0
    attributes = torch.tensor([[1, 2, 0, 1], [3, 5, 1, 2]])  # shape, colour, size, pattern of the two targets
    heads = AttributeHeads(width=8, classes={"shape": 4, "colour": 6, "size": 2, "pattern": 3})
    with torch.no_grad():
        for column, head in enumerate(heads.heads.values()):  # e0 -> the left target's words, e1 -> the right's
            head.weight.zero_(), head.bias.zero_()
            head.weight[attributes[0, column], 0] = head.weight[attributes[1, column], 1] = 10.0
    boxes = targets_for([2, 0], generator).boxes
    masks = [torch.stack((left, right)), torch.zeros(0, MASK, MASK)]
    criterion = SetCriterion(LossWeights(attribute=1.0), attribute_heads=heads)
    right_way = criterion(outputs, Targets(boxes, masks, attributes=[attributes, torch.zeros(0, 4, dtype=torch.long)]))
    wrong_way = criterion(outputs, Targets(boxes, masks, attributes=[attributes.flip(0), torch.zeros(0, 4, dtype=torch.long)]))
    assert right_way[1]["attribute"] < 0.01 < 5.0 < wrong_way[1]["attribute"]
    assert all(right_way[1][f"{name}_accuracy"] == 1.0 and wrong_way[1][f"{name}_accuracy"] == 0.0
               for name in ("shape", "colour", "size", "pattern"))
    assert (wrong_way[0] - right_way[0]).item() == pytest.approx(wrong_way[1]["attribute"] - right_way[1]["attribute"], rel=1e-4)
    assert "attribute" not in criterion(outputs, Targets(boxes, masks))[1]  # data without attribute labels
    with pytest.raises(ValueError, match="attribute_heads"):
        SetCriterion(LossWeights(attribute=1.0))


def detections_for(batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """`outputs_for` plus the last-layer outputs the distillation loss compares."""
    outputs = outputs_for(batch, generator)
    return outputs | {"pred_logits": outputs["all_logits"][-1], "presence_logits": outputs["all_presence_logits"][-1]}


def test_bernoulli_kl_is_zero_for_equal_logits_and_grows_with_the_gap():
    logits = torch.tensor([-3.0, 0.0, 2.0])
    assert bernoulli_kl(logits, logits).abs().max() < 1e-6
    gaps = bernoulli_kl(logits + torch.tensor([0.5, 1.0, 2.0]), logits)
    assert (gaps > 0).all()
    assert bernoulli_kl(logits + 2.0, logits)[1] > bernoulli_kl(logits + 1.0, logits)[1]


def test_distillation_pulls_text_prompted_scores_towards_the_teacher_in_any_query_order():
    generator = torch.Generator().manual_seed(9)
    teacher = detections_for(2, generator)
    targets = targets_for([1, 1], generator)
    targets.described = [True, False]  # sample 1 is prompted by "visual" + a box: free to change
    criterion = SetCriterion(LossWeights(distillation=5.0))
    assert criterion(teacher, targets, teacher)[1]["distillation"] == pytest.approx(0.0, abs=1e-6)
    reordered = teacher | {"pred_logits": teacher["pred_logits"].flip(-1)}
    assert criterion(reordered, targets, teacher)[1]["distillation"] == pytest.approx(0.0, abs=1e-6)
    for key in ("pred_logits", "presence_logits"):
        moved_text, moved_visual = dict(teacher), dict(teacher)
        moved_text[key] = teacher[key].index_add(0, torch.tensor([0]), torch.ones_like(teacher[key][:1]))
        moved_visual[key] = teacher[key].index_add(0, torch.tensor([1]), torch.ones_like(teacher[key][:1]))
        assert criterion(moved_text, targets, teacher)[1]["distillation"] > 1e-3, key
        assert criterion(moved_visual, targets, teacher)[1]["distillation"] == pytest.approx(0.0, abs=1e-6), key
    with pytest.raises(ValueError, match="teacher"):
        criterion(teacher, targets)


def test_distillation_leaves_out_images_the_teacher_never_saw():
    generator = torch.Generator().manual_seed(10)
    teacher = detections_for(2, generator)
    targets = targets_for([1, 0], generator)
    targets.distill = [True, False]  # sample 1 is drawn in a style the teacher was not trained on
    criterion = SetCriterion(LossWeights(distillation=5.0))
    for row, scored in ((0, True), (1, False)):
        moved = teacher | {"presence_logits": teacher["presence_logits"].index_add(
            0, torch.tensor([row]), torch.ones_like(teacher["presence_logits"][:1]))}
        distance = criterion(moved, targets, teacher)[1]["distillation"]
        assert (distance > 1e-3) if scored else distance == pytest.approx(0.0, abs=1e-6)
