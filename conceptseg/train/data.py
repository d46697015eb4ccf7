"""Training examples, prompt sampling and batching.

A training source maps a position in the example stream (0, 1, 2, ...) to an `Example`, deterministically, so
that resuming at a position reproduces the data exactly (no loader state to save). Two sources:
  * `ConceptWorldSource`: the procedural concept world, one fresh sample per position (never repeats);
  * `DatasetSource`: any finite dataset (`__len__` + `__getitem__` returning `Example`, e.g. `SacoDataset`),
    reshuffled every epoch with a seeded permutation.
Both turn a share of the examples into exemplar prompts, as SAM 3's training does (`PromptSampling`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from conceptseg.data.batch import model_inputs
from conceptseg.data.examples import Example, example_from_sample
from conceptseg.data.synthetic import ConceptWorld, combo_allowed
from conceptseg.data.synthetic_phrases import COLOUR_NAMES, SHAPES
from conceptseg.model.box_ops import pixel_xyxy_to_normalized_cxcywh
from conceptseg.model.tokenizer import EXEMPLAR_TEXT
from conceptseg.predict.transforms import preprocess_batch
from conceptseg.train.targets import Targets


class TrainingSource(Protocol):
    def example(self, position: int) -> Example: ...


@dataclass(frozen=True)
class PromptSampling:
    """How often an example becomes an exemplar prompt instead of a plain text prompt (SAM 3: 20 % / 20 %).

    exemplar_fraction: text "visual" + one positive box; the targets are what that exemplar stands for.
    extra_box_fraction: the text prompt plus up to one positive box (on a target) and one negative box.
    cross_exemplar_fraction: text "visual" + one positive box drawn on another image (not in SAM 3's training;
    concept-world data only): the targets are what the exemplar stands for in this image, often nothing.
    """

    exemplar_fraction: float = 0.2
    extra_box_fraction: float = 0.2
    cross_exemplar_fraction: float = 0.0

    def __post_init__(self) -> None:
        fractions = (self.exemplar_fraction, self.extra_box_fraction, self.cross_exemplar_fraction)
        if min(fractions) < 0 or sum(fractions) > 1:
            raise ValueError("the exemplar, extra-box and cross-exemplar fractions must be >= 0 and sum to at most 1")

    def choose(self, rng: np.random.Generator) -> str:
        """Draw the prompt kind of one example: "exemplar", "extra_boxes", "cross_exemplar" or "text"."""
        draw = rng.random()
        for kind, bound in zip(("exemplar", "extra_boxes", "cross_exemplar"),
                               itertools.accumulate((self.exemplar_fraction, self.extra_box_fraction,
                                                     self.cross_exemplar_fraction))):
            if draw < bound:
                return kind
        return "text"


def with_extra_boxes(example: Example, rng: np.random.Generator) -> Example:
    """The example with up to one positive exemplar (a random target) and up to one negative (a distractor)."""
    positives = example.boxes[rng.permutation(len(example.boxes))[: rng.integers(0, 2)]]
    negatives = example.distractor_boxes[rng.permutation(len(example.distractor_boxes))[: rng.integers(0, 2)]]
    boxes = np.concatenate([positives, negatives]).astype(np.float32)
    labels = np.arange(len(boxes)) < len(positives)
    return replace(example, prompt_boxes=boxes, prompt_labels=labels)


def as_exemplar_only(example: Example, rng: np.random.Generator) -> Example:
    """A positive example re-prompted by "visual" + one random target's box (same targets); negatives unchanged."""
    if len(example.boxes) == 0:
        return example
    chosen = example.boxes[[rng.integers(len(example.boxes))]]
    return replace(example, phrase=EXEMPLAR_TEXT, prompt_boxes=chosen, prompt_labels=np.ones(1, dtype=bool))


def cross_exemplar_example(world: ConceptWorld, position: int, rng: np.random.Generator) -> Example:
    """Scene `position` prompted by "visual" + a box drawn on another scene (`ConceptWorld.reference_sample`).
    Half the time the boxed object's colour and shape occur here (a positive); otherwise they do not, though
    one of them does if anything is here (a hard negative). The targets are every instance of that colour and
    shape, as for an exemplar in its own image."""
    sample = world.sample(position)
    present = sorted({(obj.shape, obj.colour) for obj in sample.instances})
    if present and rng.random() < 0.5:
        shape, colour = present[rng.integers(len(present))]
    else:
        absent = [(shape, colour) for shape in SHAPES for colour in COLOUR_NAMES
                  if (shape, colour) not in present and combo_allowed(colour, shape, world.split)]
        near = [pair for pair in absent if any(pair[0] == s or pair[1] == c for s, c in present)]
        candidates = near or absent
        shape, colour = candidates[rng.integers(len(candidates))]
    reference = world.reference_sample(shape, colour, position)
    targets = [i for i, obj in enumerate(sample.instances) if (obj.shape, obj.colour) == (shape, colour)]
    example = example_from_sample(replace(sample, target_indices=np.asarray(targets, dtype=np.int64)))
    return replace(example, phrase=EXEMPLAR_TEXT, prompt_boxes=reference.exemplar_boxes,
                   prompt_labels=reference.exemplar_labels, prompt_image=reference.image)


def replace_world(world: ConceptWorld, **changes: Any) -> ConceptWorld:
    """A concept world like `world` (size, split, seed, fractions, variety) with some settings changed."""
    settings = {name: getattr(world, name) for name in ("size", "split", "seed", "positive_fraction",
                                                         "hard_negative_fraction", "max_objects",
                                                         "min_visible_fraction", "min_visible_pixels", "variety")}
    return ConceptWorld(**(settings | changes))


class ConceptWorldSource:
    """Position p -> concept-world sample p, with prompts sampled by a generator seeded from (seed, p).

    Exemplar-only examples come from `ConceptWorld.exemplar_sample(p)`, whose targets are every instance with
    the boxed object's shape and colour (the concept world's meaning of an exemplar).
    varied_world / varied_fraction: that share of the positions draws its scene from `varied_world` instead
    (the same concepts drawn with more variety, `conceptseg.data.Variety`); those examples are not distilled
    (`Example.distill`), as the teacher never saw such images.
    """

    def __init__(self, world: ConceptWorld, sampling: PromptSampling = PromptSampling(), seed: int = 0,
                 easy_examples: int = 0, varied_world: ConceptWorld | None = None,
                 varied_fraction: float = 0.0) -> None:
        if not 0.0 <= varied_fraction <= 1.0:
            raise ValueError(f"varied_fraction must lie in [0, 1], got {varied_fraction}")
        if varied_fraction and varied_world is None:
            raise ValueError("varied_fraction > 0 needs a varied_world")
        self.world = world
        self.sampling = sampling
        self.seed = seed
        # Curriculum: the first `easy_examples` positions have no hard negatives. From scratch, text and image
        # features share nothing yet; "is anything red / star-shaped here?" starts the binding that hard
        # negatives ("red star" beside a red circle and a blue star) then refine.
        self.easy_examples = easy_examples
        self.easy_world = replace_world(world, hard_negative_fraction=0.0) if easy_examples else world
        self.varied_world = varied_world
        self.varied_fraction = varied_fraction

    def example(self, position: int) -> Example:
        rng = np.random.default_rng([self.seed, position])
        kind = self.sampling.choose(rng)
        world = self.easy_world if position < self.easy_examples else self.world
        # a generator of its own, so that runs without variety draw exactly what they always did
        varied = self.varied_fraction > 0 and (
            np.random.default_rng([self.seed, position, 1]).random() < self.varied_fraction)
        if varied:
            world = self.varied_world
        if kind == "exemplar":
            example = replace(example_from_sample(world.exemplar_sample(position)), phrase=EXEMPLAR_TEXT)
        elif kind == "cross_exemplar":
            example = cross_exemplar_example(world, position, rng)
        else:
            example = example_from_sample(world.sample(position))
            if kind == "extra_boxes":
                example = with_extra_boxes(example, rng)
        return replace(example, distill=False) if varied else example


class DatasetSource:
    """Position p -> an example of a finite dataset, in a fresh seeded order each epoch, prompts sampled."""

    def __init__(self, dataset: Sequence[Example], sampling: PromptSampling = PromptSampling(), seed: int = 0) -> None:
        if len(dataset) == 0:
            raise ValueError("the training dataset is empty")
        if sampling.cross_exemplar_fraction:
            raise ValueError("exemplars across images need concept-world data (ConceptWorldSource)")
        self.dataset = dataset
        self.sampling = sampling
        self.seed = seed
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, permutation) cache

    def example(self, position: int) -> Example:
        epoch, offset = divmod(position, len(self.dataset))
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset)))
        example = self.dataset[int(self._order[1][offset])]
        if len(example.prompt_boxes):  # the dataset defines the prompt itself
            return example
        rng = np.random.default_rng([self.seed, position])
        kind = self.sampling.choose(rng)
        if kind == "exemplar":
            return as_exemplar_only(example, rng)
        return with_extra_boxes(example, rng) if kind == "extra_boxes" else example


@dataclass
class Batch:
    """Model inputs and targets of a batch; see `SAM3.detect` for the input layouts."""

    pixel_values: torch.Tensor  # [B, 3, S, S]
    input_ids: torch.Tensor  # [B, L]
    prompt_boxes: torch.Tensor | None  # [B, K, 4] normalised cxcywh, or None when no example has boxes
    prompt_labels: torch.Tensor | None  # [B, K]: 1 positive, 0 negative, -1 padding
    targets: Targets
    prompt_rows: torch.Tensor | None = None  # [R] the examples whose prompt boxes are drawn on another image
    prompt_pixel_values: torch.Tensor | None = None  # [R, 3, S, S] those images


def resize_masks(masks: np.ndarray, size: int) -> torch.Tensor:
    """bool [N, H, W] -> float [N, size, size]: the fraction of each target pixel covered (area interpolation)."""
    masks = torch.as_tensor(masks)
    if len(masks) == 0:
        return torch.zeros(0, size, size)
    return F.interpolate(masks[:, None].float(), size=(size, size), mode="area")[:, 0]


def collate(examples: Sequence[Example], image_size: int, mask_size: int) -> Batch:
    """Stack examples into model inputs (see `model_inputs`) and targets with masks at `mask_size`."""
    targets = Targets(
        boxes=[pixel_xyxy_to_normalized_cxcywh(torch.as_tensor(e.boxes, dtype=torch.float32).reshape(-1, 4),
                                               *e.image.shape[:2]) for e in examples],
        masks=[resize_masks(e.masks, mask_size) for e in examples],
        described=[e.phrase != EXEMPLAR_TEXT for e in examples],
        attributes=(None if any(e.attributes is None for e in examples)
                    else [torch.as_tensor(e.attributes) for e in examples]),
        distill=[e.distill for e in examples],
    )
    rows = [row for row, e in enumerate(examples) if e.prompt_image is not None]
    prompt_rows = prompt_pixel_values = None
    if rows:
        prompt_rows = torch.tensor(rows)
        prompt_pixel_values = preprocess_batch([examples[row].prompt_image for row in rows], image_size)
    return Batch(*model_inputs(examples, image_size), targets, prompt_rows, prompt_pixel_values)
