"""Training clips for the tracker: a concept-world clip, an object to follow and its prompts (SAM 2 style).

A `TrackerSource` maps a stream position p to a `TrackerExample`, deterministically in (seed, p), like the
detector's sources (`conceptseg.train.data`): resuming at a position reproduces the data exactly. An example:
  * a clip, `ConceptWorld.video`: objects move, spin, pass behind each other, enter and leave the frame;
  * the object to follow: any track visible on frame 0 with at least `min_area_fraction` of the frame (not
    only the tracks the clip's phrase names: the tracker follows whatever it is given);
  * its prompt on frame 0 (`TrackerPromptSampling`): the GT mask (how the detect-and-track loop starts objects
    from detections), else the GT box or 1-3 positive clicks, the first in the mask's interior;
  * correction frames: later frames on which the trainer simulates a user's correction. The clicks depend on
    the tracker's prediction there, so the trainer draws them with `correction_clicks` and the example's
    generator for that frame (`TrackerExample.rng`), again a function of (seed, p).
Coordinates are pixels of the clip: points (x, y), boxes (x0, y0, x1, y1) with x1, y1 exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from conceptseg.data.synthetic import ConceptWorld

MAX_ATTEMPTS = 8  # clips tried per position for one with an object to follow (one almost always has one)


@dataclass(frozen=True)
class TrackerPromptSampling:
    """How frame 0 is prompted and how often later frames are corrected.

    mask_fraction: the GT mask (SAM 2 trains half its clips so; the video loop starts every detected object
    this way); box_fraction: of the other clips, the GT box, else 1..max_clicks positive clicks.
    correction_fraction: clips with 1..max_correction_frames corrected later frames (SAM 2 corrects one later
    frame in half its clips); min_area_fraction: the followed object covers at least this share of frame 0.
    """

    mask_fraction: float = 0.3
    box_fraction: float = 0.5
    max_clicks: int = 3
    correction_fraction: float = 0.5
    max_correction_frames: int = 2
    min_area_fraction: float = 0.002

    def __post_init__(self) -> None:
        for name in ("mask_fraction", "box_fraction", "correction_fraction", "min_area_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.max_clicks < 1 or self.max_correction_frames < 1:
            raise ValueError("max_clicks and max_correction_frames must be >= 1")


@dataclass(frozen=True)
class Prompt:
    """A prompt on one frame: clicks (float32 [N, 2] xy, int64 labels [N], 1 positive, 0 negative; N may be
    0), a box (float32 [4] xyxy) or a mask (bool [H, W])."""

    points: np.ndarray
    point_labels: np.ndarray
    box: np.ndarray | None = None
    mask: np.ndarray | None = None

    @classmethod
    def clicks(cls, points: list[tuple[int, int]], labels: list[int]) -> Prompt:
        return cls(np.asarray(points, dtype=np.float32).reshape(-1, 2), np.asarray(labels, dtype=np.int64))

    @classmethod
    def of_box(cls, box: np.ndarray) -> Prompt:
        return cls(np.zeros((0, 2), dtype=np.float32), np.zeros(0, dtype=np.int64), box=box)

    @classmethod
    def of_mask(cls, mask: np.ndarray) -> Prompt:
        return cls(np.zeros((0, 2), dtype=np.float32), np.zeros(0, dtype=np.int64), mask=mask)

    @property
    def kind(self) -> str:
        return "mask" if self.mask is not None else "box" if self.box is not None else "clicks"


@dataclass(frozen=True)
class TrackerExample:
    """A clip (uint8 [T, H, W, 3]), the followed object's visible pixels on each frame (bool [T, H, W], empty
    where it is absent), its prompt on frame 0, the frames to correct and the seed of their clicks."""

    frames: np.ndarray
    masks: np.ndarray
    prompt: Prompt
    correction_frames: tuple[int, ...]
    key: tuple[int, ...]

    def rng(self, frame: int) -> np.random.Generator:
        """The generator of the correction clicks on `frame`."""
        return np.random.default_rng([*self.key, frame])


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box of a non-empty mask [H, W] -> float32 [4] xyxy (x1, y1 exclusive, as the concept world's)."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def _depth(mask: np.ndarray) -> np.ndarray:
    """Distance of each mask pixel to the nearest pixel outside it, the image border counting as outside."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def centre_click(mask: np.ndarray) -> tuple[int, int]:
    """The mask pixel farthest from its edge (x, y): the centre of a convex, unoccluded object, and inside the
    mask whatever its shape. The evaluation's one click."""
    y, x = np.unravel_index(np.argmax(_depth(mask)), mask.shape)
    return int(x), int(y)


def interior_click(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A random pixel (x, y) of the mask's interior: at least half as deep as its deepest pixel."""
    depth = _depth(mask)
    ys, xs = np.nonzero(depth >= 0.5 * depth.max())
    pick = rng.integers(len(xs))
    return int(xs[pick]), int(ys[pick])


def random_click(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A uniformly random pixel (x, y) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    pick = rng.integers(len(xs))
    return int(xs[pick]), int(ys[pick])


def sample_prompt(mask: np.ndarray, sampling: TrackerPromptSampling, rng: np.random.Generator) -> Prompt:
    """The frame-0 prompt of a visible object's mask [H, W]: its mask, its box, or 1-3 positive clicks."""
    if rng.random() < sampling.mask_fraction:
        return Prompt.of_mask(mask.copy())
    if rng.random() < sampling.box_fraction:
        return Prompt.of_box(mask_box(mask))
    count = int(rng.integers(1, sampling.max_clicks + 1))
    points = [interior_click(mask, rng)] + [random_click(mask, rng) for _ in range(count - 1)]
    return Prompt.clicks(points, [1] * count)


def correction_clicks(target: np.ndarray, predicted: np.ndarray, rng: np.random.Generator) -> Prompt:
    """A user's correction of a prediction, both bool [H, W] with the object visible in `target`.

    As in SAM 2's training, one click drawn uniformly from the error region: positive where the object was
    missed, negative where the prediction spills over (inside the object when there is no error). A frame with
    clicks is predicted from its clicks alone here (`Tracker.track_step`), so a negative click comes after a
    positive one in the object's interior, as a user refining the object would give them.
    """
    error = target != predicted
    x, y = random_click(error if error.any() else target, rng)
    if target[y, x]:
        return Prompt.clicks([(x, y)], [1])
    return Prompt.clicks([interior_click(target, rng), (x, y)], [1, 0])


class TrackerSource:
    """Position p -> a `TrackerExample` from clip p of a concept world (see the module docstring).

    Clip p is `world.video(MAX_ATTEMPTS * p)`; in the rare clip where no object is large enough on frame 0 the
    next index is tried.
    """

    def __init__(self, world: ConceptWorld, sampling: TrackerPromptSampling = TrackerPromptSampling(),
                 seed: int = 0, num_frames: int = 8) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.world = world
        self.sampling = sampling
        self.seed = seed
        self.num_frames = num_frames

    def example(self, position: int) -> TrackerExample:
        rng = np.random.default_rng([self.seed, position])
        frames, masks = self._clip(position, rng)
        prompt = sample_prompt(masks[0], self.sampling, rng)
        corrections: tuple[int, ...] = ()
        candidates = np.flatnonzero(masks[1:].any(axis=(1, 2))) + 1  # later frames where the object shows
        if len(candidates) and rng.random() < self.sampling.correction_fraction:
            count = min(int(rng.integers(1, self.sampling.max_correction_frames + 1)), len(candidates))
            corrections = tuple(sorted(int(t) for t in rng.choice(candidates, count, replace=False)))
        return TrackerExample(frames, masks, prompt, corrections, (self.seed, position, 1))

    def _clip(self, position: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Frames [T, H, W, 3] and the chosen track's masks [T, H, W]."""
        area = self.world.height * self.world.width
        for attempt in range(MAX_ATTEMPTS):
            clip = self.world.video(MAX_ATTEMPTS * position + attempt, num_frames=self.num_frames)
            pixels = clip.instance_masks[:, 0].sum(axis=(1, 2))
            eligible = np.flatnonzero(pixels >= max(1.0, self.sampling.min_area_fraction * area))
            if len(eligible):
                track = eligible[rng.integers(len(eligible))]
                return clip.frames, clip.instance_masks[track]
        raise RuntimeError(f"no clip with an object to follow at position {position} ({MAX_ATTEMPTS} tries)")
