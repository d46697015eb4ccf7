"""Training-time variety for the concept world: how objects and images are drawn, behind switches.

A detector trained on one drawing per shape name, square images and hard pixel edges learns the generator's
hand rather than the concepts. `Variety` turns on factors that vary the drawing without changing what any
phrase means: shape variants, outline strokes and hollow shapes, blur, JPEG artefacts, wider colour jitter
(never across a colour name), textured backgrounds, wider object scales and non-square images. Held-out
styles (`styles="heldout"`: one drawing per shape and one background kind never used in training) measure
how far the detector generalises. `shape_confusers` is a curriculum of shape-only negatives whose scenes
hold look-alike shapes.

With every factor off (`Variety()`), generation is bit-for-bit what it was before these factors existed.
The factors draw from their own generator, so the scene itself (objects, phrase, positions) only changes
where a factor has to change it: aspect, scale and confusers.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from conceptseg.data.synthetic_phrases import (
    COLOURS,
    HELDOUT_COMBOS,
    PATTERNS,
    SIZES,
    Concept,
    ObjectAttributes,
)
from conceptseg.data.synthetic_render import (
    TEXTURE_KINDS,
    Placement,
    Stroke,
    render_background,
    render_texture,
)
from conceptseg.data.synthetic_shapes import sample_drawing

VARIETY_FACTORS: tuple[str, ...] = (
    "shape_variants", "outlines", "blur", "jpeg", "colour_jitter", "backgrounds", "scale", "aspect",
)
STYLES: tuple[str, ...] = ("train", "heldout")
# Shapes a detector easily mistakes for each shape; shape-only negatives get them as confusers.
CONFUSABLE_SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("hexagon", "ring"),
    "square": ("diamond", "hexagon"),
    "triangle": ("diamond", "heart"),
    "star": ("cross",),
    "hexagon": ("circle",),
    "ring": ("circle", "crescent"),
    "cross": ("star",),
    "heart": ("triangle", "circle"),
    "diamond": ("square",),
    "crescent": ("ring", "circle"),
}
# `Variety.all`'s share of negatives made shape-only (without the curriculum about 3% of negatives name a shape
# alone: shape-only phrases only ever come up as easy negatives) and of those given look-alike shapes.
SHAPE_ONLY_NEGATIVE_SHARE = 0.35
SHAPE_CONFUSER_SHARE = 0.5
# Shapes that stay nameable when hollow (a hollow circle would be a ring, a hollow ring means nothing).
_HOLLOW_SHAPES = ("square", "triangle", "star", "hexagon", "cross", "heart", "diamond", "crescent")
_NAMED_RGB = np.asarray(list(COLOURS.values()), dtype=np.float64)
_TRAIN_TEXTURES = tuple(kind for kind in TEXTURE_KINDS if kind != "checker")
_HELDOUT_TEXTURE = "checker"
_ASPECT_RANGE = (0.6, 1.7)  # width / height
_SHARE_WORDS = {"shapeonly": "shape_only_negatives", "confusers": "shape_confusers"}  # parse's NAME=P words


@dataclass(frozen=True)
class Variety:
    """Which variety factors are on (all off: the original concept world). See the module docstring.

    styles="heldout" works on its own: it draws every object in its held-out variant and half the
    backgrounds in the held-out kind whether or not `shape_variants` and `backgrounds` are on.
    """

    shape_variants: bool = False  # several drawings per shape name
    outlines: bool = False  # outline strokes in a darker shade of the object's colour; a few hollow objects
    blur: bool = False  # Gaussian blur of the final image, sigma ~ U(0, 1.2), on half the images
    jpeg: bool = False  # JPEG re-encoding, quality ~ U(30, 95), on half the images
    colour_jitter: bool = False  # wider colour jitter that keeps each colour's nearest named colour
    backgrounds: bool = False  # textured backgrounds (grain, stripes, dots) on half the images
    scale: bool = False  # wider radius ranges ("small" and "large" still never overlap)
    aspect: bool = False  # per-image size of about the same area, width / height in [0.6, 1.7]; half square
    shape_only_negatives: float = 0.0  # share of negatives turned into phrases naming a shape alone
    shape_confusers: float = 0.0  # share of shape-only negatives given look-alike shapes
    styles: str = "train"  # "heldout": every object in its held-out drawing, half the backgrounds held out

    def __post_init__(self) -> None:
        for name in VARIETY_FACTORS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Variety.{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("shape_only_negatives", "shape_confusers"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.styles not in STYLES:
            raise ValueError(f"styles must be one of {STYLES}, got {self.styles!r}")

    @property
    def active(self) -> bool:
        """Whether anything differs from the original concept world."""
        return self != Variety()

    @classmethod
    def all(cls, styles: str = "train", shape_only_negatives: float = SHAPE_ONLY_NEGATIVE_SHARE,
            shape_confusers: float = SHAPE_CONFUSER_SHARE) -> Variety:
        """Every factor on, and the shape-only negative curriculum."""
        return cls(**dict.fromkeys(VARIETY_FACTORS, True), shape_only_negatives=shape_only_negatives,
                   shape_confusers=shape_confusers, styles=styles)

    @classmethod
    def parse(cls, text: str) -> Variety:
        """Parse "none", "all" or a comma list of factor names, "shapeonly=P", "confusers=P" and "heldout"
        (e.g. "all,heldout", "blur,jpeg,shapeonly=0.3,confusers=0.5"); the inverse of `describe`."""
        words = [word.strip().lower() for word in text.split(",") if word.strip()]
        if not words:
            raise ValueError("empty variety: expected 'none', 'all' or factor names such as 'blur,jpeg'")
        if words == ["none"]:
            return cls()
        if "none" in words:
            raise ValueError(f"variety {text!r}: 'none' cannot be combined with other words")
        on, everything, shares, styles = {}, False, {}, "train"
        for word in words:
            if word in VARIETY_FACTORS:
                on[word] = True
            elif word == "all":
                everything = True
            elif word in STYLES:
                styles = word
            elif word.partition("=")[0] in _SHARE_WORDS and "=" in word:
                name, _, value = word.partition("=")
                try:
                    shares[_SHARE_WORDS[name]] = float(value)
                except ValueError:
                    raise ValueError(f"variety {text!r}: {name} needs a number, got {word!r}") from None
            else:
                raise ValueError(f"variety {text!r}: unknown word {word!r}; expected 'none', 'all', "
                                 f"'heldout', 'shapeonly=P', 'confusers=P' or factor names {VARIETY_FACTORS}")
        if everything:
            return replace(cls.all(styles), **shares)
        return cls(**on, **shares, styles=styles)

    def describe(self) -> str:
        """The shortest text that `parse` turns back into this Variety."""
        on = [name for name in VARIETY_FACTORS if getattr(self, name)]
        everything = len(on) == len(VARIETY_FACTORS)
        baseline = Variety.all() if everything else Variety()
        words = ["all"] if everything else on
        words += [f"{word}={getattr(self, name)!r}" for word, name in _SHARE_WORDS.items()
                  if getattr(self, name) != getattr(baseline, name)]
        if self.styles == "heldout":
            words.append("heldout")
        return ",".join(words) or "none"


def sample_frame(rng: np.random.Generator, height: int, width: int) -> tuple[int, int]:
    """An image size of about height * width pixels: half the time (height, width) itself, else a random
    width / height ratio in _ASPECT_RANGE (log-uniform)."""
    if rng.random() < 0.5:
        return height, width
    ratio = np.exp(rng.uniform(*np.log(_ASPECT_RANGE)))
    area = height * width
    return max(32, round(np.sqrt(area / ratio))), max(32, round(np.sqrt(area * ratio)))


def largest_frame(height: int, width: int) -> tuple[int, int]:
    """Upper bounds of the (height, width) `sample_frame` can return."""
    area = height * width
    return (max(height, round(np.sqrt(area / _ASPECT_RANGE[0]))),
            max(width, round(np.sqrt(area * _ASPECT_RANGE[1]))))


def jitter_colour(rng: np.random.Generator, colour: str) -> tuple[float, float, float]:
    """A variation of a named colour (brightness x0.75-1.2, saturation x0.7-1.3, +-25 per channel) whose
    nearest named colour is still `colour`; resampled until it is."""
    base = np.asarray(COLOURS[colour], dtype=np.float64)
    grey, target = base.mean(), list(COLOURS).index(colour)
    while True:  # eight candidates at a time: one by one costs more than the few rejected ones
        rgb = (grey + (base - grey) * rng.uniform(0.7, 1.3, (8, 1))) * rng.uniform(0.75, 1.2, (8, 1))
        rgb = np.clip(rgb + rng.uniform(-25, 25, (8, 3)), 0, 255)
        kept = np.flatnonzero(((rgb[:, None] - _NAMED_RGB) ** 2).sum(axis=2).argmin(axis=1) == target)
        if len(kept):
            return float(rgb[kept[0], 0]), float(rgb[kept[0], 1]), float(rgb[kept[0], 2])


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A uint8 image [H, W, C] blurred by a Gaussian (taps out to 2 sigma, edges clamped). Separable shifted
    sums in numpy: for sigma <= 1.2 this is several times faster than PIL's GaussianBlur."""
    reach = max(1, int(np.ceil(2 * sigma)))
    taps = np.exp(-0.5 * (np.arange(reach + 1) / sigma) ** 2)
    taps = (taps / (taps[0] + 2 * taps[1:].sum())).astype(np.float32)
    blurred = image.astype(np.float32)
    for axis in (0, 1):
        line = np.moveaxis(blurred, axis, 0)  # blur along the first axis of this view
        out = line * taps[0]
        for shift, tap in enumerate(taps[1:], start=1):
            out[shift:] += tap * line[:-shift]
            out[:shift] += tap * line[:1]  # beyond the edge: the edge pixel
            out[:-shift] += tap * line[shift:]
            out[-shift:] += tap * line[-1:]
        blurred = np.moveaxis(out, 0, axis)
    blurred += 0.5
    return np.clip(blurred, 0, 255).astype(np.uint8)


class SceneStyle:
    """The enabled factors' draws for one sample, from their own generator `rng` (the scene's generator is
    only used where the original world would use it; `rng` is None when every factor is off, and then
    nothing changes). `height, width` is the sample's image size."""

    def __init__(self, variety: Variety, rng: np.random.Generator | None, height: int, width: int) -> None:
        self.variety = variety
        self.rng = rng
        self.height, self.width = sample_frame(rng, height, width) if variety.aspect else (height, width)
        self.blur = float(rng.uniform(0.0, 1.2)) if variety.blur and rng.random() < 0.5 else 0.0
        self.jpeg = int(rng.integers(30, 96)) if variety.jpeg and rng.random() < 0.5 else None
        self.wants_confusers = False  # see shape_only_negative
        self.background = ""

    def shape_only_negative(self, split: str) -> bool:
        """For a negative: whether the curriculum makes it a shape-only easy negative (probability
        shape_only_negatives), and draws whether a shape-only phrase gets look-alike shapes (probability
        shape_confusers). Held-out phrases always name a colour, so the curriculum stays out of the held-out
        split."""
        variety = self.variety
        if not (variety.shape_only_negatives or variety.shape_confusers) or split == "heldout":
            return False
        shape_only = bool(self.rng.random() < variety.shape_only_negatives)
        self.wants_confusers = bool(self.rng.random() < variety.shape_confusers)
        return shape_only

    def add_confusers(self, concept: Concept, objects: list[ObjectAttributes],
                      max_objects: int) -> tuple[list[ObjectAttributes], tuple[str, ...]]:
        """If the sample wants confusers and the phrase names a shape alone: the negative scene with 1-3
        objects of look-alike shapes (any colour, size and pattern) inserted at random depths, at most
        `max_objects` in all. Returns the objects and the look-alike shapes (none if nothing was added)."""
        if not (self.wants_confusers and concept.named_attributes == ("shape",)):
            return objects, ()
        shapes, rng = CONFUSABLE_SHAPES[concept.shape], self.rng
        count = min(int(rng.integers(1, 4)), max_objects)
        objects = objects[:max_objects - count]
        for _ in range(count):
            shape = shapes[rng.integers(len(shapes))]
            # The curriculum never runs in the held-out split, so held-out pairs are simply left out.
            colours = [colour for colour in COLOURS if (colour, shape) not in HELDOUT_COMBOS]
            size, pattern = SIZES[rng.integers(len(SIZES))], PATTERNS[rng.integers(len(PATTERNS))]
            confuser = ObjectAttributes(shape, colours[rng.integers(len(colours))], size, pattern)
            objects.insert(int(rng.integers(len(objects) + 1)), confuser)
        return objects, shapes

    def dress(self, objects: list[ObjectAttributes], placements: list[Placement]) -> list[Placement]:
        """The placements with drawing variants, strokes and colour jitter as the factors ask."""
        variety, rng = self.variety, self.rng
        drawn = variety.styles == "heldout" or variety.shape_variants
        if not (drawn or variety.outlines or variety.colour_jitter):
            return placements
        dressed = []
        for obj, placement in zip(objects, placements):
            drawing = sample_drawing(rng, obj.shape, variety.styles) if drawn else None
            stroke = self._stroke(obj, placement.radius) if variety.outlines else None
            rgb = jitter_colour(rng, obj.colour) if variety.colour_jitter else placement.rgb
            dressed.append(replace(placement, drawing=drawing, stroke=stroke, rgb=rgb))
        return dressed

    def dress_tracks(self, objects: list[ObjectAttributes],
                     trajectories: list[list[Placement]]) -> list[list[Placement]]:
        """Video trajectories dressed like `dress`, each object drawn alike in every frame."""
        firsts = self.dress(objects, [track[0] for track in trajectories])
        return [[replace(p, rgb=first.rgb, drawing=first.drawing, stroke=first.stroke) for p in track]
                for first, track in zip(firsts, trajectories)]

    def _stroke(self, obj: ObjectAttributes, radius: float) -> Stroke | None:
        """A third of the objects get a dark outline of 1-3 px, at most a quarter of the radius so that
        most of the object keeps its colour; one in ten solid objects whose shape allows it is hollow: a
        2-3 px stroke in its own colour (a dark stroke alone would blur the colour name)."""
        draw = self.rng.random()
        if draw < 0.1 and obj.shape in _HOLLOW_SHAPES and obj.pattern == "solid":
            return Stroke(int(self.rng.integers(2, 4)), 1.0, hollow=True)
        if draw < 0.43:
            width = min(int(self.rng.integers(1, 4)), int(radius / 4))
            shade = float(self.rng.uniform(0.35, 0.6))
            return Stroke(width, shade) if width else None
        return None

    def paint_background(self, scene_rng: np.random.Generator, canvas: np.ndarray) -> None:
        """Fill the canvas: an original kind (from the scene's generator, as without variety), a training
        texture (`backgrounds`, half the time) or the held-out checkerboard (styles="heldout", half the
        time; training textures are never used then)."""
        heldout = self.variety.styles == "heldout"
        if (heldout or self.variety.backgrounds) and self.rng.random() < 0.5:
            self.background = _HELDOUT_TEXTURE if heldout else str(self.rng.choice(_TRAIN_TEXTURES))
            render_texture(self.rng, canvas, self.background)
        else:
            self.background = render_background(scene_rng, canvas)

    def finish(self, image: np.ndarray) -> np.ndarray:
        """The final uint8 image [H, W, 3] blurred and JPEG re-encoded as drawn (masks are unaffected)."""
        if self.blur:
            image = gaussian_blur(image, self.blur)
        if self.jpeg is not None:
            encoded = io.BytesIO()
            Image.fromarray(image).save(encoded, format="JPEG", quality=self.jpeg)
            image = np.array(Image.open(encoded).convert("RGB"))
        return image

    def record(self, placements: list[Placement], confusers: bool) -> dict[str, Any]:
        """What was drawn, per image and per instance (in the order of `Sample.instances`); empty when every
        factor is off."""
        if self.rng is None:
            return {}
        strokes = [placement.stroke for placement in placements]
        return {
            "height": self.height, "width": self.width, "background": self.background, "blur": self.blur,
            "jpeg": self.jpeg, "confusers": confusers,
            "variants": [p.drawing.variant if p.drawing else "default" for p in placements],
            "outlined": [stroke.width if stroke and not stroke.hollow else 0 for stroke in strokes],
            "hollow": [bool(stroke and stroke.hollow) for stroke in strokes],
            "rgb": [p.rgb for p in placements],
            "radius": [p.radius for p in placements],
        }

