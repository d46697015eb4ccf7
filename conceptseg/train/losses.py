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
never learns to pair a word with pixels without it (see docs/embedded-model-runs.md and
research/text_binding_probe.py).

Attributes (off by default; data with attribute labels only): linear heads classify each target's attributes
(in the concept world: shape, colour, size and fill pattern) from the same region feature (its own mask this
time); the term is the mean of the heads' cross-entropies. Without it the detector's training washes fine
texture (the fill patterns) out of the image features that the alignment stage had put there (see
docs/embedded-model-runs.md, "Patterns").

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from conceptseg.model.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from conceptseg.train.matcher import MatcherCosts, Matching, hungarian_match
from conceptseg.train.targets import Targets

Outputs = dict[str, torch.Tensor]
LossTerms = dict[str, torch.Tensor]  # term name (a `LossWeights` field, or a logged-only metric) -> value


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
    """Linear classifiers of an object's attributes from its region feature, one per attribute.

    classes: {attribute: number of classes}, in the order of the label columns (`Targets.attributes`); the
    caller that knows the data supplies them (the concept world's vocabularies: `trainer.CONCEPT_WORLD_ATTRIBUTES`).
    """

    def __init__(self, width: int, classes: dict[str, int]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(width, count) for name, count in classes.items()})

    def forward(self, regions: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(mean of the attributes' cross-entropies, {attribute: accuracy}) of regions [R, C] against labels
        [R, A], one column per head in order."""
        entropies, accuracies = [], {}
        for column, (name, head) in enumerate(self.heads.items()):
            logits, truth = head(regions), labels[:, column]
            entropies.append(F.cross_entropy(logits, truth))
            accuracies[name] = (logits.argmax(-1) == truth).float().mean()
        return torch.stack(entropies).mean(), accuracies


@dataclass(frozen=True)
class LossBatch:
    """What every loss of a batch sees besides the outputs it scores and their matching."""

    targets: Targets
    positive: torch.Tensor  # [B] bool: the sample's prompt has an instance
    num_instances: int  # ground-truth instances in the batch, at least 1: the divisor of summed terms (DETR)
    teacher: Outputs | None = None  # the teacher's outputs on the same batch (distillation)

    @classmethod
    def of(cls, targets: Targets, device: torch.device, teacher: Outputs | None = None) -> LossBatch:
        positive = torch.tensor([len(b) > 0 for b in targets.boxes], device=device)
        return cls(targets, positive, max(sum(len(b) for b in targets.boxes), 1), teacher)


def decoder_layer(outputs: Outputs, layer: int) -> Outputs:
    """The scores of one decoder layer: logits [B, Q], boxes [B, Q, 4] cxcywh, presence_logits [B, 1]."""
    return {"logits": outputs["all_logits"][layer], "boxes": outputs["all_boxes"][layer],
            "presence_logits": outputs["all_presence_logits"][layer]}


class SetCriterion:
    """Matches predictions to targets and computes the weighted sum of the loss terms.

    The losses are a table (`loss_map`, name -> method): each method takes (outputs, their matching,
    `LossBatch`) and returns named terms, and each term is weighted by the `LossWeights` field of its name
    (terms without one, the attribute accuracies, are only logged). Adding a loss is one method, one table
    entry and one weight. What each loss scores:
      * every decoder layer (`decoder_layer`), matched on its own: DECODER_LOSSES;
      * the two-stage proposals, when the model makes them, matched on their own: PROPOSAL_LOSSES;
      * the final outputs, under the last decoder layer's matching (the masks are its queries'): "masks", and
        each of OPTIONAL_LOSSES whose weight is not 0.
    attribute_heads: the classifiers of the attribute loss (trained with the model); needed iff its weight > 0.
    """

    DECODER_LOSSES = ("classification", "presence", "boxes")
    PROPOSAL_LOSSES = ("classification", "boxes")
    OPTIONAL_LOSSES = ("alignment", "attribute", "distillation")

    def __init__(self, weights: LossWeights = LossWeights(), costs: MatcherCosts | None = None,
                 attribute_heads: AttributeHeads | None = None) -> None:
        if weights.attribute and attribute_heads is None:
            raise ValueError("the attribute loss (weight > 0) needs attribute_heads")
        self.weights = weights
        self.costs = costs or MatcherCosts()
        self.attribute_heads = attribute_heads
        self.loss_map: dict[str, Callable[[Outputs, Matching, LossBatch], LossTerms]] = {
            "classification": self.loss_classification,
            "presence": self.loss_presence,
            "boxes": self.loss_boxes,
            "masks": self.loss_masks,
            "alignment": self.loss_alignment,
            "attribute": self.loss_attribute,
            "distillation": self.loss_distillation,
        }
        self.final_losses = ("masks", *(name for name in self.OPTIONAL_LOSSES if getattr(weights, name)))

    def __call__(self, outputs: Outputs, targets: Targets, teacher: Outputs | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """outputs: `train.trainer.detect_batch` outputs (`SAM3.detect`'s plus the fusion encoder's inputs, which
        the alignment and attribute losses need); teacher: the teacher's outputs on the same batch (needed iff
        the distillation weight > 0). Returns (total loss, unweighted last-layer terms + total)."""
        batch = LossBatch.of(targets, outputs["all_logits"].device, teacher)
        layers = [decoder_layer(outputs, layer) for layer in range(outputs["all_logits"].shape[0])]
        matchings = [self.match(layer, targets) for layer in layers]
        layer_terms = [self.get_losses(self.DECODER_LOSSES, layer, matching, batch)
                       for layer, matching in zip(layers, matchings)]
        # the total adds each layer's (and the proposals') terms as one sum, then the final terms one by one: the
        # order the recipe's recorded losses were summed in, so that its reruns log them bit for bit
        total = outputs["all_logits"].new_zeros(())
        for terms in layer_terms:
            total = total + sum(self.weighted(terms))
        if "proposal_logits" in outputs:  # two-stage query selection: supervise the selected proposals too
            proposals = {"logits": outputs["proposal_logits"], "boxes": outputs["proposal_boxes"]}
            proposal_terms = self.get_losses(self.PROPOSAL_LOSSES, proposals, self.match(proposals, targets), batch)
            total = total + sum(self.weighted(proposal_terms))
        final_terms = self.get_losses(self.final_losses, outputs, matchings[-1], batch)
        total = sum(self.weighted(final_terms), start=total)
        logged = {name: float(value.detach()) for name, value in (layer_terms[-1] | final_terms).items()}
        logged["loss"] = float(total.detach())
        return total, logged

    def match(self, scored: Outputs, targets: Targets) -> Matching:
        """Hungarian matching of scored queries (logits [B, Q], boxes [B, Q, 4] cxcywh) to the targets."""
        return hungarian_match(scored["logits"], scored["boxes"], targets.boxes, self.costs)

    def get_losses(self, names: Sequence[str], outputs: Outputs, matching: Matching, batch: LossBatch) -> LossTerms:
        """The terms of the losses `names` (entries of `loss_map`) on these outputs."""
        terms: LossTerms = {}
        for name in names:
            terms |= self.loss_map[name](outputs, matching, batch)
        return terms

    def weighted(self, terms: LossTerms) -> list[torch.Tensor]:
        """Each term times its weight; terms that are not `LossWeights` fields (accuracies) are only logged."""
        return [getattr(self.weights, name) * value for name, value in terms.items() if hasattr(self.weights, name)]

    def loss_classification(self, outputs: Outputs, matching: Matching, batch: LossBatch) -> LossTerms:
        """Focal loss summed over every query of the positive samples, matched queries labelled 1."""
        logits = outputs["logits"]
        labels = torch.zeros_like(logits)
        for image, (queries, _) in enumerate(matching):
            labels[image, queries] = 1.0
        loss = sigmoid_focal_loss(logits, labels, self.weights.focal_alpha, self.weights.focal_gamma)
        return {"classification": (loss * batch.positive[:, None]).sum() / batch.num_instances}

    def loss_presence(self, outputs: Outputs, matching: Matching, batch: LossBatch) -> LossTerms:
        """BCE of the presence logit against "the prompt has an instance", on every sample."""
        presence = outputs["presence_logits"][:, 0]
        return {"presence": F.binary_cross_entropy_with_logits(presence, batch.positive.to(presence.dtype))}

    def loss_boxes(self, outputs: Outputs, matching: Matching, batch: LossBatch) -> LossTerms:
        """L1 and 1 - gIoU of the matched queries' boxes (cxcywh) against their targets'."""
        boxes = outputs["boxes"]
        predicted = torch.cat([boxes[image, queries] for image, (queries, _) in enumerate(matching)])
        wanted = torch.cat([t[index] for t, (_, index) in zip(batch.targets.boxes, matching)]).to(predicted)
        giou = generalized_box_iou(box_cxcywh_to_xyxy(predicted[:, None]), box_cxcywh_to_xyxy(wanted[:, None]))
        return {
            "box_l1": F.l1_loss(predicted, wanted, reduction="sum") / batch.num_instances,
            "box_giou": (1 - giou.flatten()).sum() / batch.num_instances,
        }

    def loss_masks(self, outputs: Outputs, matching: Matching, batch: LossBatch) -> LossTerms:
        """Focal and dice losses of the matched masks, BCE of the semantic map against the union of the targets;
        predictions are resized to the targets' size."""
        masks, target_masks = outputs["pred_masks"], batch.targets.masks
        predicted = torch.cat([masks[image, queries] for image, (queries, _) in enumerate(matching)])
        wanted = torch.cat([t[index] for t, (_, index) in zip(target_masks, matching)]).to(predicted)
        size = target_masks[0].shape[-2:]
        if predicted.shape[-2:] != size:
            predicted = F.interpolate(predicted[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        focal = sigmoid_focal_loss(predicted, wanted, self.weights.focal_alpha, self.weights.focal_gamma)
        semantic = outputs["semantic_seg"]
        if semantic.shape[-2:] != size:
            semantic = F.interpolate(semantic, size=size, mode="bilinear", align_corners=False)
        union = torch.stack([m.amax(0) if len(m) else m.new_zeros(size) for m in target_masks]).to(semantic)
        return {
            "mask_focal": focal.flatten(1).mean(1).sum() / batch.num_instances,
            "mask_dice": dice_loss(predicted, wanted).sum() / batch.num_instances,
            "semantic": F.binary_cross_entropy_with_logits(semantic[:, 0], union),
        }

    def loss_alignment(self, outputs: Outputs, matching: Matching, batch: LossBatch) -> LossTerms:
        """InfoNCE of target regions against the batch's phrases (see the module docstring); 0 without any."""
        tokens, targets = outputs["image_tokens"], batch.targets
        rows = [i for i, (masks, text) in enumerate(zip(targets.masks, targets.described_samples()))
                if len(masks) and text]
        if not rows:
            return {"alignment": tokens.new_zeros(())}
        regions = torch.cat([masked_token_mean(tokens[i], targets.masks[i].amax(0, keepdim=True)) for i in rows])
        phrases = phrase_mean(outputs["text_tokens"], outputs["text_padding"])
        logits = F.normalize(regions, dim=-1) @ F.normalize(phrases, dim=-1).T / self.weights.alignment_temperature
        labels = torch.tensor(rows, device=tokens.device)
        # the same phrase in another sample is not a wrong answer: leave it out of the candidates
        same = (phrases[labels][:, None] == phrases[None]).all(-1)
        same[torch.arange(len(rows)), labels] = False
        return {"alignment": F.cross_entropy(logits.masked_fill(same, float("-inf")), labels)}

    def loss_attribute(self, outputs: Outputs, matching: Matching, batch: LossBatch) -> LossTerms:
        """`AttributeHeads` loss and accuracies over every target's region feature (its own mask); no terms for a
        batch without attribute labels or without targets."""
        targets = batch.targets
        rows = [i for i, masks in enumerate(targets.masks) if len(masks)]
        if targets.attributes is None or not rows:
            return {}
        tokens = outputs["image_tokens"]
        regions = torch.cat([masked_token_mean(tokens[i], targets.masks[i]) for i in rows])
        loss, accuracies = self.attribute_heads(regions, torch.cat([targets.attributes[i] for i in rows]))
        return {"attribute": loss} | {f"{name}_accuracy": accuracy for name, accuracy in accuracies.items()}

    def loss_distillation(self, outputs: Outputs, matching: Matching, batch: LossBatch) -> LossTerms:
        """Distance of the text-prompted samples' scores from the teacher's (see the module docstring), on the
        images the teacher knows (`Targets.distilled_samples`); 0 without such samples."""
        teacher = batch.teacher
        if teacher is None:
            raise ValueError("the distillation loss (weight > 0) needs the teacher's outputs")
        rows = torch.tensor([i for i, scored in enumerate(batch.targets.distilled_samples()) if scored],
                            device=outputs["pred_logits"].device)
        if not len(rows):
            return {"distillation": outputs["pred_logits"].new_zeros(())}
        # sorted: near-duplicate queries trade places between two sets of weights, and which one holds a
        # detection does not matter, only how many pass and how sure they are
        student_queries = outputs["pred_logits"][rows].sort(dim=-1).values
        teacher_queries = teacher["pred_logits"][rows].sort(dim=-1).values
        distance = (bernoulli_kl(outputs["presence_logits"][rows], teacher["presence_logits"][rows]).mean()
                    + bernoulli_kl(student_queries, teacher_queries).mean())
        return {"distillation": distance}
