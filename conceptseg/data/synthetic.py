"""The synthetic "concept world": procedurally generated image-phrase pairs with exact instance masks.

A scene holds 0-10 coloured shapes (see `synthetic_phrases` for the vocabulary) on a varied background;
later objects occlude earlier ones. Each sample pairs the scene with a noun phrase and the masks of every
instance the phrase refers to. Samples are a pure function of (seed, split, index): `ConceptWorld(seed=0)
.sample(7)` gives the same bytes in every process (for a given numpy version and platform). Generation
uses numpy Generators only and never iterates sets, so string-hash randomisation cannot leak in.

Kinds of sample (fractions set by `positive_fraction` and `hard_negative_fraction`):
  * "positive": at least one instance matches the phrase;
  * "hard_negative": nothing matches, but an object shares the phrase's shape or its named colour;
  * "easy_negative": nothing shares the phrase's shape or named colour (the scene may be empty).

Splits and the held-out colour-shape combinations (`HELDOUT_COMBOS`):
  * "train" and "test" have the same distribution: held-out combinations never appear at all, neither as
    objects (named or not) nor in phrases. Test data differs from training data only through the seed.
  * "heldout": every phrase names a held-out combination (as a positive or a negative); scene objects may
    have any combination.
Instance masks are the visible pixels only; an object left with less than `min_visible_fraction` of its
area (occlusion or image border) or fewer than `min_visible_pixels` pixels is removed from the scene
before painting, so every painted object is a labelled instance.

Images are square by default; `size=(height, width)` gives a fixed non-square canvas. `variety`
(`synthetic_style.Variety`) switches on training-time variety in how scenes are drawn; with it off (the
default) every sample is bit-for-bit what it always was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from conceptseg.data.examples import empty_boxes, empty_labels
from conceptseg.data.synthetic_phrases import (
    COLOUR_NAMES,
    HELDOUT_COMBOS,
    PATTERNS,
    SHAPES,
    SIZES,
    Concept,
    ObjectAttributes,
    classify_query,
)
from conceptseg.data.synthetic_render import (
    Placement,
    ShapeMask,
    compose_owners,
    finish_image,
    make_noise_tile,
    paint_objects,
    place_objects,
    shape_mask,
    visible_masks_and_boxes,
)
from conceptseg.data.synthetic_style import SceneStyle, Variety, largest_frame
from conceptseg.data.synthetic_video import VideoSample, render_clip, sample_trajectories

SPLITS: tuple[str, ...] = ("train", "test", "heldout")
KINDS: tuple[str, ...] = ("positive", "hard_negative", "easy_negative")
_SPLIT_CODES = {"train": 0, "test": 1, "heldout": 2}
_STREAM_CODES = {"image": 0, "exemplar": 1, "video": 2, "reference": 3}
_MAX_ATTEMPTS = 200

# Optional attributes a phrase names besides its shape, and how often.
_TEMPLATES: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 0.20),
    (("colour",), 0.30),
    (("size",), 0.08),
    (("pattern",), 0.08),
    (("size", "colour"), 0.14),
    (("colour", "pattern"), 0.12),
    (("size", "colour", "pattern"), 0.08),
)
_PATTERN_CUMULATIVE_WEIGHTS = np.cumsum([0.5, 0.25, 0.25])  # solid, striped, dotted
_STYLE_STREAM = 7  # last seed word of the variety factors' own generators


@dataclass
class Sample:
    """One image-phrase pair.

    `instances`, `instance_masks` (bool [M, H, W], visible pixels) and `instance_boxes` (float32 [M, 4],
    xyxy px, tight around the mask with exclusive x1/y1) describe every object in the scene in painting
    order; `target_indices` (int64 [N]) picks the ones the phrase refers to. Exemplar prompts, when present,
    are boxes (float32 [K, 4] xyxy px) with labels (bool [K], True = positive). `style` records what the
    variety factors drew (`SceneStyle.record`); it is empty when variety is off.
    """

    image: np.ndarray
    phrase: str
    concept: Concept
    kind: str
    instances: list[ObjectAttributes]
    instance_masks: np.ndarray
    instance_boxes: np.ndarray
    target_indices: np.ndarray
    exemplar_boxes: np.ndarray = field(default_factory=empty_boxes)
    exemplar_labels: np.ndarray = field(default_factory=empty_labels)
    style: dict[str, Any] = field(default_factory=dict)

    @property
    def masks(self) -> np.ndarray:
        """bool [N, H, W]: masks of the instances the phrase refers to (N = 0 for negatives)."""
        return self.instance_masks[self.target_indices]

    @property
    def boxes(self) -> np.ndarray:
        """float32 [N, 4]: xyxy pixel boxes of the instances the phrase refers to."""
        return self.instance_boxes[self.target_indices]


def exemplar_prompt(sample: Sample, instance_index: int) -> Sample:
    """Turn a scene into an exemplar query: a positive box on instance `instance_index`, whose targets are
    every instance sharing that instance's shape and colour. The phrase names that colour and shape."""
    if not 0 <= instance_index < len(sample.instances):
        raise ValueError(f"instance_index must be in [0, {len(sample.instances)}), got {instance_index}")
    chosen = sample.instances[instance_index]
    concept = Concept(shape=chosen.shape, colour=chosen.colour, plural=sample.concept.plural)
    targets = [i for i, obj in enumerate(sample.instances) if concept.matches(obj)]
    return replace(
        sample, phrase=concept.text, concept=concept, kind="positive",
        target_indices=np.asarray(targets, dtype=np.int64),
        exemplar_boxes=sample.instance_boxes[[instance_index]].copy(),
        exemplar_labels=np.ones(1, dtype=bool),
    )


class ConceptWorld:
    """Deterministic generator of concept-world samples; torch-free, cheap enough to run on the fly.

    Args:
        size: image side in pixels (square images), or (height, width) of non-square ones; object radii
            scale with sqrt(height * width).
        split: "train", "test" or "heldout" (see the module docstring).
        seed: non-negative base seed; sample `index` of (seed, split) is always the same.
        positive_fraction: probability that a sample is a positive.
        hard_negative_fraction: share of the negatives that are hard negatives.
        max_objects: most objects per scene (before occlusion culling).
        min_visible_fraction: objects with less of their area visible are removed.
        min_visible_pixels: objects with fewer visible pixels are removed (default scales with the area).
        variety: training-time variety of the drawing (`Variety()`: none).
    """

    def __init__(self, size: int | tuple[int, int] = 224, split: str = "train", seed: int = 0,
                 positive_fraction: float = 0.45, hard_negative_fraction: float = 0.85, max_objects: int = 10,
                 min_visible_fraction: float = 0.3, min_visible_pixels: int | None = None,
                 variety: Variety = Variety()) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        shape = (size, size) if isinstance(size, int) else tuple(size)
        if len(shape) != 2 or not all(isinstance(side, int) and side >= 32 for side in shape):
            raise ValueError(f"size must be an int >= 32 or a (height, width) pair of them, got {size!r}")
        if not isinstance(variety, Variety):
            raise ValueError(f"variety must be a Variety, got {variety!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        for name, value in (("positive_fraction", positive_fraction),
                            ("hard_negative_fraction", hard_negative_fraction),
                            ("min_visible_fraction", min_visible_fraction)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {max_objects}")
        self.size = size if isinstance(size, int) else shape
        self.height, self.width = shape
        self.variety = variety
        self.split = split
        self.seed = seed
        self.positive_fraction = positive_fraction
        self.hard_negative_fraction = hard_negative_fraction
        self.max_objects = max_objects
        self.min_visible_fraction = min_visible_fraction
        if min_visible_pixels is None:  # sqrt(h * w) is exactly the side of a square
            min_visible_pixels = max(4, round(24 * (math.sqrt(self.height * self.width) / 224) ** 2))
        self.min_visible_pixels = min_visible_pixels
        most_height, most_width = largest_frame(*shape) if variety.aspect else shape
        # Larger aspect frames crop a periodic extension of the tile, so square crops keep the default noise.
        extension = ((0, 2 * (most_height - shape[0])), (0, 2 * (most_width - shape[1])), (0, 0))
        self._noise_tile = np.pad(make_noise_tile(*shape), extension, mode="wrap")
        # Reused scratch memory for the canvas: a fresh image-sized float array per sample costs page faults.
        # Hence one ConceptWorld must not be shared between threads (processes are fine).
        self._canvas_memory = np.empty(most_height * most_width * 3, dtype=np.float32)

    def __getitem__(self, index: int) -> Sample:
        return self.sample(index)

    def sample(self, index: int) -> Sample:
        """The image-phrase pair number `index` (any non-negative int)."""
        rng = self._rng("image", index)
        style = self._style("image", index, self.variety)
        kind, templates = self._choose_kind(rng), _TEMPLATES
        if kind != "positive" and style.shape_only_negative(self.split):
            kind, templates = "easy_negative", (((), 1.0),)  # shape-only phrases
        return self._generate(rng, kind, style, templates)

    def exemplar_sample(self, index: int) -> Sample:
        """A positive scene prompted by one exemplar box; the targets share the boxed instance's shape and
        colour."""
        rng = self._rng("exemplar", index)
        style = self._style("exemplar", index, self.variety)
        sample = self._generate(rng, "positive", style, templates=((("colour",), 1.0),))
        return exemplar_prompt(sample, int(rng.choice(sample.target_indices)))

    def reference_sample(self, shape: str, colour: str, index: int) -> Sample:
        """A scene holding one or more `colour` `shape`s, one of them boxed as a positive exemplar: an exemplar
        prompt for other scenes (the pair must be allowed in the split)."""
        if not combo_allowed(colour, shape, self.split):
            raise ValueError(f"{colour} {shape} is a held-out pair: not in split {self.split!r}")
        rng = self._rng("reference", index)
        style = self._style("reference", index, self.variety)
        sample = self._generate(rng, "positive", style, concept=Concept(shape=shape, colour=colour))
        return exemplar_prompt(sample, int(rng.choice(sample.target_indices)))

    def video(self, index: int, num_frames: int = 12, motion: str = "straight") -> VideoSample:
        """A clip of `num_frames` frames with moving objects and one phrase (kinds as for images).

        Objects move on straight lines and spin, enter and leave the frame and pass behind each other
        (motion="bouncing": they also bounce off walls outside the image and come back, see
        `synthetic_video.sample_trajectories`);
        a track's id is its position in `instances` and stays the same in every frame. Clips are square;
        of the variety factors they take drawings, outlines, colour jitter, backgrounds, blur and JPEG
        (each track and frame drawn alike), not scale, aspect or confusers.
        """
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if self.height != self.width:
            raise ValueError(f"video needs a square world, got size {self.size}")
        rng = self._rng("video", index)
        style = self._style("video", index, replace(self.variety, scale=False, aspect=False,
                                                     shape_confusers=0.0))
        kind = self._choose_kind(rng)
        background = np.empty((self.height, self.width, 3), dtype=np.float32)
        style.paint_background(rng, background)
        for _ in range(_MAX_ATTEMPTS):
            concept = _random_concept(rng, self.split, kind, _TEMPLATES)
            objects = _scene_objects(rng, kind, concept, self.split, self.max_objects)
            trajectories = sample_trajectories(rng, objects, self.height, num_frames, motion)
            trajectories = style.dress_tracks(objects, trajectories)
            clip = render_clip(rng, objects, trajectories, background, self._noise_tile, num_frames,
                               self.min_visible_pixels)
            if classify_query(concept, clip.instances) == kind:
                for frame in clip.frames:
                    frame[:] = style.finish(frame)
                targets = [i for i, obj in enumerate(clip.instances) if concept.matches(obj)]
                return VideoSample(**vars(clip), phrase=concept.text, concept=concept, kind=kind,
                                   target_indices=np.asarray(targets, dtype=np.int64))
        raise RuntimeError(f"could not build a {kind} clip in {_MAX_ATTEMPTS} attempts")

    def _rng(self, stream: str, index: int) -> np.random.Generator:
        if not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"index must be a non-negative int, got {index!r}")
        return np.random.default_rng([self.seed, _SPLIT_CODES[self.split], _STREAM_CODES[stream], int(index)])

    def _style(self, stream: str, index: int, variety: Variety) -> SceneStyle:
        """The variety factors' draws for one sample, from a generator of their own (none when every factor
        is off) so that the scene's generator sees the same draws as without variety."""
        codes = [self.seed, _SPLIT_CODES[self.split], _STREAM_CODES[stream], int(index), _STYLE_STREAM]
        rng = np.random.default_rng(codes) if variety.active else None
        return SceneStyle(variety, rng, self.height, self.width)

    def _choose_kind(self, rng: np.random.Generator) -> str:
        if rng.random() < self.positive_fraction:
            return "positive"
        return "hard_negative" if rng.random() < self.hard_negative_fraction else "easy_negative"

    def _generate(self, rng: np.random.Generator, kind: str, style: SceneStyle,
                  templates: tuple[tuple[tuple[str, ...], float], ...] = (), concept: Concept | None = None) -> Sample:
        """Sample attributes (and a phrase from `templates`, unless `concept` is given) until the visible scene
        has the wanted kind (and any confusers wanted survive), then paint it."""
        fixed = concept
        height, width = style.height, style.width
        for _ in range(_MAX_ATTEMPTS):
            concept = fixed or _random_concept(rng, self.split, kind, templates)
            objects = _scene_objects(rng, kind, concept, self.split, self.max_objects)
            objects, confusers = style.add_confusers(concept, objects, self.max_objects)
            placements = style.dress(objects, place_objects(rng, objects, height, width, style.variety.scale))
            masks = [shape_mask(placement) for placement in placements]
            owners = compose_owners(masks, (height, width))
            keep = self._visible_enough(owners, masks)
            objects = [obj for obj, kept in zip(objects, keep) if kept]
            if classify_query(concept, objects) == kind and (
                    not confusers or any(obj.shape in confusers for obj in objects)):
                if not all(keep):
                    placements = [p for p, kept in zip(placements, keep) if kept]
                    masks = [m for m, kept in zip(masks, keep) if kept]
                    owners = compose_owners(masks, (height, width))
                return self._paint(rng, concept, kind, objects, placements, masks, owners, style,
                                   bool(confusers))
        raise RuntimeError(f"could not build a {kind} sample in {_MAX_ATTEMPTS} attempts")

    def _visible_enough(self, owners: np.ndarray, masks: list[ShapeMask]) -> list[bool]:
        """Which objects keep enough visible pixels once everything is stacked. Removing the others only
        uncovers more of the rest, so one pass suffices."""
        visible = np.bincount(owners.ravel() + 1, minlength=len(masks) + 1)[1:]
        return [bool(count >= max(self.min_visible_fraction * m.mask.sum(), self.min_visible_pixels))
                for count, m in zip(visible, masks)]

    def _paint(self, rng: np.random.Generator, concept: Concept, kind: str, objects: list[ObjectAttributes],
               placements: list[Placement], masks: list[ShapeMask], owners: np.ndarray,
               style: SceneStyle, confusers: bool) -> Sample:
        canvas = self._canvas_memory[:owners.size * 3].reshape(*owners.shape, 3)
        style.paint_background(rng, canvas)
        paint_objects(canvas, owners, placements, masks)
        image = style.finish(finish_image(canvas, self._noise_tile, rng))
        instance_masks, instance_boxes = visible_masks_and_boxes(owners, masks)
        targets = [i for i, obj in enumerate(objects) if concept.matches(obj)]
        return Sample(image=image, phrase=concept.text, concept=concept, kind=kind, instances=objects,
                      instance_masks=instance_masks, instance_boxes=instance_boxes,
                      target_indices=np.asarray(targets, dtype=np.int64),
                      style=style.record(placements, confusers))


def combo_allowed(colour: str, shape: str, split: str) -> bool:
    """Whether objects of this colour and shape occur in the split (held-out pairs only in "heldout")."""
    return split == "heldout" or (colour, shape) not in HELDOUT_COMBOS


def _random_colour(rng: np.random.Generator, shape: str, split: str, exclude: str | None = None) -> str:
    allowed = [c for c in COLOUR_NAMES if c != exclude and combo_allowed(c, shape, split)]
    return allowed[rng.integers(len(allowed))]


def _random_object(rng: np.random.Generator, split: str) -> ObjectAttributes:
    shape = SHAPES[rng.integers(len(SHAPES))]
    return ObjectAttributes(shape=shape, colour=_random_colour(rng, shape, split),
                            size=SIZES[rng.integers(len(SIZES))],
                            pattern=PATTERNS[int(np.searchsorted(_PATTERN_CUMULATIVE_WEIGHTS, rng.random()))])


def _random_concept(rng: np.random.Generator, split: str, kind: str,
                    templates: tuple[tuple[tuple[str, ...], float], ...]) -> Concept:
    """A phrase for the split: a hard negative names at least two attributes (one must differ from a present
    object); in the held-out split the phrase always names a held-out colour-shape pair."""
    usable = [(named, weight) for named, weight in templates
              if (kind != "hard_negative" or named) and (split != "heldout" or "colour" in named)]
    weights = np.array([weight for _, weight in usable])
    named = usable[rng.choice(len(usable), p=weights / weights.sum())][0]
    if split == "heldout":
        colour, shape = HELDOUT_COMBOS[rng.integers(len(HELDOUT_COMBOS))]
    else:
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = _random_colour(rng, shape, split) if "colour" in named else None
    size = SIZES[rng.integers(len(SIZES))] if "size" in named else None
    pattern = PATTERNS[rng.integers(len(PATTERNS))] if "pattern" in named else None
    return Concept(shape=shape, colour=colour, size=size, pattern=pattern, plural=bool(rng.random() < 0.5))


def _conform(obj: ObjectAttributes, concept: Concept, rng: np.random.Generator,
             split: str) -> ObjectAttributes:
    """The object changed to match every attribute the concept names (and stay allowed in the split)."""
    colour = concept.colour or obj.colour
    if not combo_allowed(colour, concept.shape, split):
        colour = _random_colour(rng, concept.shape, split)
    return ObjectAttributes(shape=concept.shape, colour=colour, size=concept.size or obj.size,
                            pattern=concept.pattern or obj.pattern)


def _near_miss(obj: ObjectAttributes, concept: Concept, rng: np.random.Generator,
               split: str) -> ObjectAttributes:
    """The object changed to match the concept in all named attributes but one, keeping the concept's
    shape or colour so that the concept becomes a hard negative for a scene holding it."""
    mutable = [name for name in concept.named_attributes if name != "shape" or concept.colour is not None]
    mutated = mutable[rng.integers(len(mutable))]
    matching = _conform(obj, concept, rng, split)
    if mutated == "shape":
        shapes = [s for s in SHAPES if s != concept.shape and combo_allowed(matching.colour, s, split)]
        return replace(matching, shape=shapes[rng.integers(len(shapes))])
    if mutated == "colour":
        return replace(matching, colour=_random_colour(rng, concept.shape, split, exclude=concept.colour))
    vocabulary = SIZES if mutated == "size" else PATTERNS
    others = [word for word in vocabulary if word != getattr(concept, mutated)]
    return replace(matching, **{mutated: others[rng.integers(len(others))]})


def _scene_objects(rng: np.random.Generator, kind: str, concept: Concept, split: str,
                   max_objects: int) -> list[ObjectAttributes]:
    """Object attributes for a scene that makes `concept` a sample of `kind` (before occlusion culling)."""
    count = int(rng.integers(0 if kind == "easy_negative" else 1, max_objects + 1))
    objects = [_random_object(rng, split) for _ in range(count)]
    if kind == "easy_negative":
        return [obj for obj in objects if classify_query(concept, [obj]) == "easy_negative"]
    if kind == "positive":
        # Often several instances match, so that plural phrases meet crowds and not just singletons.
        matches = 1 if rng.random() < 0.6 else int(rng.integers(1, min(count, 4) + 1))
        for anchor in rng.permutation(count)[:matches]:
            objects[anchor] = _conform(objects[anchor], concept, rng, split)
        return objects
    anchor = int(rng.integers(count))
    objects[anchor] = _near_miss(objects[anchor], concept, rng, split)
    return [obj for obj in objects if not concept.matches(obj)]

