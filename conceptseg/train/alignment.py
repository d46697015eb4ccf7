"""Region-phrase alignment pre-training: a stand-in for the contrastive pre-training of SAM 3's encoders.

SAM 3's image and text encoders come from the Perception Encoder, so an image region and the phrase naming it
already lie close together when detector training starts. A model trained from scratch has no such start, and
the detector's text-image interactions (cross-attention, the dot-product scorer, the presence token) then sit
at a saddle: it learns to find objects but not which words they answer to (see docs/embedded-model-runs.md).

This stage trains only the ViT trunk, the detector neck's coarsest level and the text encoder, on the concept
world, with a sigmoid (SigLIP-style) loss over every (object, phrase) pair of a batch: the region is the mean
of the fusion encoder's input tokens under the object's mask, the phrase the mean of its text tokens (the
same features `SetCriterion.loss_alignment` uses later), and a pair is positive iff the phrase describes the
object. Every object of every scene is a region; the phrases are one random description of each object plus
each sample's own phrase, so hard negatives ("red star" against a red circle) come from the scenes themselves.

Optionally (`attribute_weight` > 0) linear heads on the same region features also classify each object's shape,
colour, size and fill pattern (the loss is the mean of the four cross-entropies). The pair loss alone did not
teach a trained trunk the fill patterns, fine texture it had learnt to ignore: a pattern word and a pattern
feature must then appear together, a saddle. Direct labels break it: from a trained detector's weights, 250
steps at lr 1e-3 with weight 20 lifted the pattern accuracy from 0.44 to 0.91 (see docs/embedded-model-runs.md,
"Patterns").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from conceptseg.data.synthetic import ConceptWorld, Sample
from conceptseg.data.synthetic_phrases import Concept, ObjectAttributes
from conceptseg.model.sam3 import SAM3
from conceptseg.model.tokenizer import tokenize
from conceptseg.predict.transforms import preprocess_batch
from conceptseg.train.losses import AttributeHeads, masked_token_mean, phrase_mean
from conceptseg.train.trainer import CONCEPT_WORLD_ATTRIBUTES, uses_weight_decay

# Sample positions used here start far from the detector's (which count up from 0), so the two stages see
# different scenes of the same training split.
FIRST_POSITION = 10**9


@dataclass(frozen=True)
class AlignmentConfig:
    steps: int = 1000
    batch_size: int = 32  # scenes per step (each holds several regions)
    lr: float = 1e-3  # 2e-3 stalls with the convolutional patch stem (pair loss ~20 after 400 steps)
    warmup_steps: int = 50
    weight_decay: float = 0.05
    attribute_weight: float = 0.0  # weight of the attribute classification loss (0: pair loss only)
    seed: int = 0


def describe(obj: ObjectAttributes, rng: np.random.Generator) -> Concept:
    """A random phrase naming `obj`: its shape, plus each other attribute with probability 1/2."""
    keep = rng.random(3) < 0.5
    return Concept(shape=obj.shape, colour=obj.colour if keep[0] else None, size=obj.size if keep[1] else None,
                   pattern=obj.pattern if keep[2] else None, plural=bool(rng.random() < 0.5))


def pair_labels(samples: list[Sample], rng: np.random.Generator) -> tuple[list[str], torch.Tensor]:
    """The batch's distinct phrases and labels [regions, phrases] (1 = the phrase describes the object);
    regions are every instance of every sample, in order."""
    objects = [obj for sample in samples for obj in sample.instances]
    concepts: dict[str, Concept] = {}
    for concept in [describe(obj, rng) for obj in objects] + [sample.concept for sample in samples]:
        concepts.setdefault(concept.text, concept)
    labels = torch.tensor([[float(c.matches(obj)) for c in concepts.values()] for obj in objects])
    return list(concepts), labels.reshape(len(objects), len(concepts))


def region_features(tokens: torch.Tensor, samples: list[Sample]) -> torch.Tensor:
    """Mean token [regions, C] under each instance mask of each sample; tokens [B, G*G, C]."""
    rows = [masked_token_mean(tokens[i], torch.as_tensor(s.instance_masks)) for i, s in enumerate(samples)
            if len(s.instances)]
    return torch.cat(rows) if rows else tokens.new_zeros(0, tokens.shape[-1])


def encode_regions(model: SAM3, samples: list[Sample]) -> torch.Tensor:
    """Region features [regions, C] of every object of the samples' scenes, from the fusion encoder's input level
    (computed without the finer neck levels the stage does not train)."""
    pixel_values = preprocess_batch([s.image for s in samples], model.config.vit.image_size)
    coarse = model.backbone.neck.levels[2](model.backbone.trunk(pixel_values.to(model.device, model.dtype)))
    return region_features(coarse.flatten(2).transpose(1, 2), samples)


def phrase_features(model: SAM3, phrases: list[str]) -> torch.Tensor:
    """Mean text token [P, C] of each phrase over its non-padding tokens (the detector's text input)."""
    text = model.encode_text(tokenize(phrases).to(model.device))
    return phrase_mean(text.tokens, text.padding)


class PairScorer(nn.Module):
    """Learnable temperature and bias of the sigmoid loss (scale 10; bias -4, about the log-odds of the ~3% positive pairs)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-4.0))

    def forward(self, regions: torch.Tensor, phrases: torch.Tensor) -> torch.Tensor:
        cosine = F.normalize(regions, dim=-1) @ F.normalize(phrases, dim=-1).T
        return cosine * self.log_scale.exp() + self.bias


def alignment_parameters(model: SAM3) -> list[nn.Parameter]:
    """What the stage trains: ViT trunk, the neck level feeding the fusion encoder, the text encoder."""
    modules = (model.backbone.trunk, model.backbone.neck.levels[2], model.detector.text_encoder)
    return [p for module in modules for p in module.parameters()]


def _parameter_groups(model: SAM3, heads: list[nn.Module], weight_decay: float) -> list[dict]:
    """AdamW groups with the detector trainer's rule for what decays (see `uses_weight_decay`); the loss heads
    (pair scorer, attribute classifiers) do not decay."""
    trained = {id(p) for p in alignment_parameters(model)}
    decayed, other = [], [p for head in heads for p in head.parameters()]
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in trained:
                (decayed if uses_weight_decay(module, name) else other).append(param)
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]


def pretrain_alignment(model: SAM3, world: ConceptWorld, config: AlignmentConfig, progress: bool = True,
                       log: list[dict[str, float]] | None = None) -> None:
    """Train `model`'s encoders in place for `config.steps` steps; appends per-step records to `log`."""
    model.train()
    scorer = PairScorer().to(model.device)
    # created only when used: drawing their initial weights would shift the torch RNG of runs without them
    attributes = None
    if config.attribute_weight:
        attributes = AttributeHeads(model.config.d_model, CONCEPT_WORLD_ATTRIBUTES).to(model.device)
    parameters = alignment_parameters(model)
    heads = [scorer] + ([attributes] if attributes else [])
    optimizer = torch.optim.AdamW(_parameter_groups(model, heads, config.weight_decay), lr=config.lr)
    bar = tqdm(range(config.steps), disable=not progress, desc="alignment", dynamic_ncols=True)
    for step in bar:
        rng = np.random.default_rng([config.seed, step])
        first = FIRST_POSITION + step * config.batch_size
        samples = [world.sample(first + i) for i in range(config.batch_size)]
        phrases, labels = pair_labels(samples, rng)
        regions = encode_regions(model, samples)
        logits = scorer(regions, phrase_features(model, phrases))
        labels = labels.to(logits)
        # summed over phrases, averaged over regions: SigLIP's normalisation, independent of the phrase count
        loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / max(len(regions), 1)
        record = {"step": step + 1, "pair_loss": loss.item()}
        if attributes and len(regions):
            attribute_labels = torch.tensor([obj.indices for sample in samples for obj in sample.instances])
            entropy, accuracies = attributes(regions, attribute_labels.to(model.device))
            loss = loss + config.attribute_weight * entropy
            record |= {f"{name}_accuracy": accuracy.item() for name, accuracy in accuracies.items()}
        for group in optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / config.warmup_steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        with torch.no_grad():
            accuracy = ((logits > 0) == (labels > 0)).float()
            recall = accuracy[labels > 0].mean().item() if (labels > 0).any() else float("nan")
            rejection = accuracy[labels == 0].mean().item()
        record |= {"loss": loss.item(), "recall": recall, "rejection": rejection}
        if log is not None:
            log.append(record)
        postfix = {"loss": f"{record['loss']:.3g}", "rec": f"{recall:.2f}", "rej": f"{rejection:.2f}"}
        if "pattern_accuracy" in record:
            postfix["pattern"] = f"{record['pattern_accuracy']:.2f}"
        bar.set_postfix(postfix)
