"""Detection and segmentation losses of the concept detector (SAM 3's recipe, DETR-style set losses).

For every decoder layer the queries are matched to the ground truth (Hungarian, `matcher.py`) and scored with
  * classification: sigmoid focal loss over all queries of *positive* samples (matched = 1, others = 0);
    negatives get no classification loss, the presence token handles them;
  * presence: binary cross-entropy of the presence logit against "the phrase has an instance", all samples;
  * boxes: L1 on normalised cxcywh and 1 - gIoU, matched queries only.
Masks exist only for the last layer: sigmoid focal (mean over pixels) and dice on the matched masks, plus
BCE of the semantic map against the union of the instance masks. Sums over instances are divided by the
number of ground-truth instances in the batch (at least 1), as in DETR.

Alignment (not in SAM 3's loss, off by default): an InfoNCE loss pairing each text-prompted positive's target
region (the fusion encoder's image tokens averaged over the union of its target masks) with its phrase (the
mean of its text tokens), against the other phrases of the batch. SAM 3 starts from Perception Encoder weights,
contrastively pre-trained so that image regions and phrases share a space; trained from scratch, the detector
never learns to pair a word with pixels without it (see docs/embedded-model.md and
benchmarks/text_binding_probe.py).

Attributes (off by default; concept-world data only): linear heads classify each target's shape, colour, size
and fill pattern from the same region feature (its own mask this time); the term is the mean of the four
cross-entropies. Without it the detector's training washes fine texture (the fill patterns) out of the image
features that the alignment stage had put there (see docs/embedded-model.md, "Patterns").

Distillation (off by default): when fine-tuning for a new kind of prompt, the text prompts can keep what they
did by matching the scores of the weights the run started from (the "teacher", `Trainer`), as in learning
without forgetting (Li & Hoiem, 2016). For the samples prompted by text it adds the Bernoulli KL divergence of
the presence probability from the teacher's and that of the query probabilities, both sorted (near-duplicate
queries trade places between the two models, so query i of one is not query i of the other).

Mask resolution: targets come at whatever size the data pipeline made them (`TrainConfig.mask_size`, GT
downsampled with area interpolation, so edges become fractional). Predicted logits are resized bilinearly to
the target size when the two differ, so training with targets larger than the model's masks supervises the
upsampled masks that inference thresholds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from conceptseg.data.synthetic_phrases import ATTRIBUTE_VOCABULARIES
from conceptseg.model.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from conceptseg.train.matcher import MatcherCosts, Matching, hungarian_match


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms. Box, mask and presence weights are SAM 3's (presence: its post-training value).

    SAM 3 weighs classification 100 with its IoU-aware "Align" variant of the loss; for the plain focal loss
    used here 20 keeps the classification term on the scale of the presence term. Confidence (query score x
    presence), not localisation, limited a small prototype trained from scratch, hence the high presence
    weight. (Measured: dividing both by 4 changed nothing in the first 400 steps of the embedded model.)
    """

    classification: float = 20.0
    presence: float = 20.0
    box_l1: float = 5.0
    box_giou: float = 2.0
    mask_focal: float = 200.0
    mask_dice: float = 10.0
    semantic: float = 2.0
    alignment: float = 0.0
    attribute: float = 0.0
    distillation: float = 0.0
    alignment_temperature: float = 0.1
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


@dataclass
class Targets:
    """Ground truth of a batch: per sample, boxes [N, 4] normalised cxcywh and masks [N, m, m] in [0, 1].

    described: per sample, whether the text names the targets (False for exemplar-only prompts, whose text is
    the placeholder "visual"); None means all do. Only the alignment loss uses it.
    attributes: per sample, int64 [N, 4] vocabulary indices of each target's shape, colour, size and pattern
    (`ObjectAttributes.indices`); None when unknown. Only the attribute loss uses it.
    """

    boxes: list[torch.Tensor]
    masks: list[torch.Tensor]
    described: list[bool] | None = None
    attributes: list[torch.Tensor] | None = None

    def described_samples(self) -> list[bool]:
        """Per sample, whether its text names the targets (all of them when `described` is None)."""
        return self.described or [True] * len(self.boxes)

    def to(self, device: torch.device) -> Targets:
        attributes = None if self.attributes is None else [a.to(device) for a in self.attributes]
        return Targets([b.to(device) for b in self.boxes], [m.to(device) for m in self.masks], self.described,
                       attributes)


def masked_token_mean(tokens: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean of the tokens [G*G, C] of a square G x G grid under each mask [M, H, W] -> [M, C]; each cell is
    weighted by the share of it the mask covers (a region feature of the alignment losses)."""
    weights = F.adaptive_avg_pool2d(masks[:, None].to(tokens), math.isqrt(tokens.shape[0])).flatten(1)
    return weights @ tokens / weights.sum(1, keepdim=True).clamp(min=1e-6)


def phrase_mean(tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """Mean text token [B, C] over the non-padding positions of tokens [B, L, C] (padding True = pad)."""
    valid = (~padding).to(tokens)[..., None]
    return (tokens * valid).sum(1) / valid.sum(1).clamp(min=1)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise focal loss (Lin et al. 2017) of logits against targets in [0, 1]; same shape as the input."""
    prob = logits.sigmoid()
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * cross_entropy


def bernoulli_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(teacher || student) of the Bernoulli distributions given by two logit tensors (0 when equal)."""
    wanted = teacher_logits.sigmoid()
    return (F.binary_cross_entropy_with_logits(student_logits, wanted, reduction="none")
            - F.binary_cross_entropy_with_logits(teacher_logits, wanted, reduction="none"))


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - soft dice of masks [N, ...] (logits) against targets [N, ...] in [0, 1] -> [N]."""
    prob = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    return 1 - (2 * (prob * targets).sum(1) + 1) / (prob.sum(1) + targets.sum(1) + 1)


class AttributeHeads(nn.Module):
    """Linear classifiers of an object's shape, colour, size and pattern from its region feature."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(width, len(words)) for name, words in ATTRIBUTE_VOCABULARIES.items()})

    def forward(self, regions: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(mean of the attributes' cross-entropies, {attribute: accuracy}) of regions [R, C] against labels [R, 4]
        (`ObjectAttributes.indices`)."""
        entropies, accuracies = [], {}
        for column, (name, head) in enumerate(self.heads.items()):
            logits, truth = head(regions), labels[:, column]
            entropies.append(F.cross_entropy(logits, truth))
            accuracies[name] = (logits.argmax(-1) == truth).float().mean()
        return torch.stack(entropies).mean(), accuracies


class SetCriterion:
    """Matches predictions to targets and computes the weighted sum of all loss terms.

    attribute_heads: the classifiers of the attribute loss (trained with the model); needed iff its weight > 0.
    """

    def __init__(self, weights: LossWeights = LossWeights(), costs: MatcherCosts | None = None,
                 attribute_heads: AttributeHeads | None = None) -> None:
        if weights.attribute and attribute_heads is None:
            raise ValueError("the attribute loss (weight > 0) needs attribute_heads")
        self.weights = weights
        self.costs = costs or MatcherCosts()
        self.attribute_heads = attribute_heads

    def __call__(
        self, outputs: dict[str, torch.Tensor], targets: Targets, teacher: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """outputs: `SAM3.detect` training outputs; teacher: the teacher's outputs on the same batch (needed iff
        the distillation weight > 0). Returns (total loss, unweighted last-layer terms + total)."""
        w = self.weights
        num_instances = max(sum(len(b) for b in targets.boxes), 1)
        positive = torch.tensor([len(b) > 0 for b in targets.boxes], device=outputs["all_logits"].device)
        total = outputs["all_logits"].new_zeros(())
        num_layers = outputs["all_logits"].shape[0]
        for layer in range(num_layers):
            logits, boxes = outputs["all_logits"][layer], outputs["all_boxes"][layer]
            matching = hungarian_match(logits, boxes, targets.boxes, self.costs)
            terms = {
                "classification": self.classification_loss(logits, matching, positive) / num_instances,
                "presence": F.binary_cross_entropy_with_logits(
                    outputs["all_presence_logits"][layer][:, 0], positive.to(logits.dtype)
                ),
                **self.box_losses(boxes, matching, targets.boxes, num_instances),
            }
            total = total + sum(getattr(w, name) * value for name, value in terms.items())
        if "proposal_logits" in outputs:  # two-stage query selection: supervise the selected proposals too
            logits, boxes = outputs["proposal_logits"], outputs["proposal_boxes"]
            proposal_matching = hungarian_match(logits, boxes, targets.boxes, self.costs)
            proposal_terms = {
                "classification": self.classification_loss(logits, proposal_matching, positive) / num_instances,
                **self.box_losses(boxes, proposal_matching, targets.boxes, num_instances),
            }
            total = total + sum(getattr(w, name) * value for name, value in proposal_terms.items())
        terms.update(self.mask_losses(outputs, matching, targets, num_instances))
        total = total + w.mask_focal * terms["mask_focal"] + w.mask_dice * terms["mask_dice"]
        total = total + w.semantic * terms["semantic"]
        if w.alignment:
            terms["alignment"] = self.alignment_loss(outputs, targets)
            total = total + w.alignment * terms["alignment"]
        if w.attribute and targets.attributes is not None and any(len(m) for m in targets.masks):
            terms["attribute"], accuracies = self.attribute_loss(outputs, targets)
            terms |= {f"{name}_accuracy": accuracy for name, accuracy in accuracies.items()}
            total = total + w.attribute * terms["attribute"]
        if w.distillation:
            if teacher is None:
                raise ValueError("the distillation loss (weight > 0) needs the teacher's outputs")
            terms["distillation"] = self.distillation_loss(outputs, teacher, targets)
            total = total + w.distillation * terms["distillation"]
        logged = {name: float(value.detach()) for name, value in terms.items()}
        logged["loss"] = float(total.detach())
        return total, logged

    def classification_loss(self, logits: torch.Tensor, matching: Matching, positive: torch.Tensor) -> torch.Tensor:
        """Focal loss summed over every query of the positive samples; matched queries have label 1."""
        labels = torch.zeros_like(logits)
        for image, (queries, _) in enumerate(matching):
            labels[image, queries] = 1.0
        loss = sigmoid_focal_loss(logits, labels, self.weights.focal_alpha, self.weights.focal_gamma)
        return (loss * positive[:, None]).sum()

    def box_losses(
        self, boxes: torch.Tensor, matching: Matching, target_boxes: list[torch.Tensor], num_instances: int
    ) -> dict[str, torch.Tensor]:
        predicted = torch.cat([boxes[image, queries] for image, (queries, _) in enumerate(matching)])
        wanted = torch.cat([t[index] for t, (_, index) in zip(target_boxes, matching)]).to(predicted)
        giou = generalized_box_iou(box_cxcywh_to_xyxy(predicted[:, None]), box_cxcywh_to_xyxy(wanted[:, None]))
        return {
            "box_l1": F.l1_loss(predicted, wanted, reduction="sum") / num_instances,
            "box_giou": (1 - giou.flatten()).sum() / num_instances,
        }

    def mask_losses(
        self, outputs: dict[str, torch.Tensor], matching: Matching, targets: Targets, num_instances: int
    ) -> dict[str, torch.Tensor]:
        masks = outputs["pred_masks"]
        predicted = torch.cat([masks[image, queries] for image, (queries, _) in enumerate(matching)])
        wanted = torch.cat([t[index] for t, (_, index) in zip(targets.masks, matching)]).to(predicted)
        size = targets.masks[0].shape[-2:]
        if predicted.shape[-2:] != size:
            predicted = F.interpolate(predicted[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        focal = sigmoid_focal_loss(predicted, wanted, self.weights.focal_alpha, self.weights.focal_gamma)
        semantic = outputs["semantic_seg"]
        if semantic.shape[-2:] != size:
            semantic = F.interpolate(semantic, size=size, mode="bilinear", align_corners=False)
        union = torch.stack([m.amax(0) if len(m) else m.new_zeros(size) for m in targets.masks]).to(semantic)
        return {
            "mask_focal": focal.flatten(1).mean(1).sum() / num_instances,
            "mask_dice": dice_loss(predicted, wanted).sum() / num_instances,
            "semantic": F.binary_cross_entropy_with_logits(semantic[:, 0], union),
        }

    def alignment_loss(self, outputs: dict[str, torch.Tensor], targets: Targets) -> torch.Tensor:
        """InfoNCE of target regions against the batch's phrases (see the module docstring); 0 without any."""
        tokens = outputs["image_tokens"]
        rows = [i for i, (masks, text) in enumerate(zip(targets.masks, targets.described_samples()))
                if len(masks) and text]
        if not rows:
            return tokens.new_zeros(())
        regions = torch.cat([masked_token_mean(tokens[i], targets.masks[i].amax(0, keepdim=True)) for i in rows])
        phrases = phrase_mean(outputs["text_tokens"], outputs["text_padding"])
        logits = F.normalize(regions, dim=-1) @ F.normalize(phrases, dim=-1).T / self.weights.alignment_temperature
        labels = torch.tensor(rows, device=tokens.device)
        # the same phrase in another sample is not a wrong answer: leave it out of the candidates
        same = (phrases[labels][:, None] == phrases[None]).all(-1)
        same[torch.arange(len(rows)), labels] = False
        return F.cross_entropy(logits.masked_fill(same, float("-inf")), labels)

    def attribute_loss(self, outputs: dict[str, torch.Tensor], targets: Targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`AttributeHeads` loss and accuracies over every target's region feature (its own mask); needs a target."""
        tokens = outputs["image_tokens"]
        rows = [i for i, masks in enumerate(targets.masks) if len(masks)]
        regions = torch.cat([masked_token_mean(tokens[i], targets.masks[i]) for i in rows])
        return self.attribute_heads(regions, torch.cat([targets.attributes[i] for i in rows]))

    def distillation_loss(
        self, outputs: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], targets: Targets
    ) -> torch.Tensor:
        """Distance of the text-prompted samples' scores from the teacher's (see the module docstring); 0 without
        such samples."""
        rows = torch.tensor([i for i, text in enumerate(targets.described_samples()) if text],
                            device=outputs["pred_logits"].device)
        if not len(rows):
            return outputs["pred_logits"].new_zeros(())
        # sorted: near-duplicate queries trade places between two sets of weights, and which one holds a
        # detection does not matter, only how many pass and how sure they are
        student_queries = outputs["pred_logits"][rows].sort(dim=-1).values
        teacher_queries = teacher["pred_logits"][rows].sort(dim=-1).values
        return (bernoulli_kl(outputs["presence_logits"][rows], teacher["presence_logits"][rows]).mean()
                + bernoulli_kl(student_queries, teacher_queries).mean())
