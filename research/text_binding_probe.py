"""Does a model trained from scratch learn to bind a word to what it sees? A one-square probe.

    python research/text_binding_probe.py --mode image   # the answer is in the pixels alone
    python research/text_binding_probe.py --mode text    # only the pairing of word and pixels tells
    python research/text_binding_probe.py --mode text --alignment 1   # with the alignment loss

Every scene is one 40-pixel square (--side) of one of 8 colours on grey, inside a random quadrant.
  image: the phrase is always "red square"; a sample is positive iff the square is red.
  text:  the square has any colour; the phrase names its colour (positive) or another one (negative).
  crowd: as text, but with 1-4 squares of different colours; positive iff one has the named colour.
  shape: one solid concept-world shape (10 kinds, both sizes, any of the 8 colours) instead of the square; the
         phrase names its shape or another one.
  star:  as shape, but the phrase is always "star" (the shape-reading twin of --mode image).
  striped: one concept-world shape, striped (positive) or solid or dotted (negative), painted as in the world;
         the phrase is always "striped <shape>", so only the pixels decide (the pattern-reading twin of star).
Every mode has 50% positives and one box per positive. The embedded config is trained with the normal trainer
and loss; every --every steps the script prints, on 64 held-back scenes, presence accuracy and the mean of the
largest semantic-map probability and of the largest query logit on positives vs negatives. A model that uses
the prompt separates the two columns. Results: docs/embedded-model-runs.md, "Diagnosis".
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from conceptseg.data.batch import model_inputs
from conceptseg.data.examples import Example
from conceptseg.data.synthetic_phrases import SHAPES
from conceptseg.data.synthetic_render import Placement, object_paint, shape_mask
from conceptseg.model.configs import embedded_config
from conceptseg.model.sam3 import SAM3
from conceptseg.train.losses import LossWeights
from conceptseg.train.trainer import TrainConfig, Trainer, initialize_from_scratch

COLOURS = {"red": (230, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 230), "yellow": (230, 230, 30),
           "purple": (150, 30, 200), "cyan": (30, 220, 220), "orange": (250, 140, 20), "pink": (250, 120, 190)}
NAMES = list(COLOURS)
SIZE, SIDE = 128, 40


class SquareSource:
    """Position -> one-square example of the chosen probe mode (a pure function of the position)."""

    def __init__(self, mode: str, side: int = SIDE, radius: float | None = None) -> None:
        self.mode = mode
        self.side = side
        self.radius = radius

    def example(self, position: int) -> Example:
        rng = np.random.default_rng([2026, position])
        positive = bool(rng.random() < 0.5)
        if self.mode in ("shape", "star"):
            return shape_example(rng, positive, self.mode == "star", self.radius)
        if self.mode == "striped":
            return pattern_example(rng, positive, self.radius)
        other = NAMES[1 + int(rng.integers(len(NAMES) - 1))]  # any colour but red
        count = int(rng.integers(1, 5)) if self.mode == "crowd" else 1
        colours = [NAMES[int(i)] for i in rng.permutation(len(NAMES))[:count + 1]]
        if self.mode == "image":
            colours, said = [("red" if positive else other)], "red"
        else:
            said = colours[0] if positive else colours.pop()  # the popped colour is named but not shown
            colours = colours[:count]
        image = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)
        masks, boxes = [], []
        for corner, colour in zip(rng.permutation(4)[:len(colours)], colours):  # inside one quadrant each
            offset = rng.integers(0, SIZE // 2 - self.side + 1, 2)
            x, y = (int(v) for v in offset + SIZE // 2 * np.array([corner % 2, corner // 2]))
            image[y:y + self.side, x:x + self.side] = COLOURS[colour]
            if colour == said:
                mask = np.zeros((SIZE, SIZE), dtype=bool)
                mask[y:y + self.side, x:x + self.side] = True
                masks.append(mask)
                boxes.append([x, y, x + self.side, y + self.side])
        return Example(image, f"{said} square", np.array(masks, dtype=bool).reshape(-1, SIZE, SIZE),
                       np.array(boxes, dtype=np.float32).reshape(-1, 4))


def shape_example(rng: np.random.Generator, positive: bool, fixed_phrase: bool, radius: float | None) -> Example:
    shape, other = (SHAPES[int(i)] for i in rng.permutation(len(SHAPES))[:2])
    if fixed_phrase:  # "star" is said; a negative shows any other shape
        shape, other = ("star", "star") if positive else (other if other != "star" else shape, "star")
    return one_shape_example(rng, shape, "solid", shape if positive else other, positive, radius, shaded=False)


def pattern_example(rng: np.random.Generator, positive: bool, radius: float | None) -> Example:
    """Any shape, striped (positive) or solid or dotted (negative); the phrase is always "striped <shape>"."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    pattern = "striped" if positive else ("solid", "dotted")[int(rng.integers(2))]
    return one_shape_example(rng, shape, pattern, f"striped {shape}", positive, radius, shaded=True)


def one_shape_example(rng: np.random.Generator, shape: str, pattern: str, phrase: str, positive: bool,
                      radius: float | None, shaded: bool) -> Example:
    """One concept-world shape of random size, place, colour and angle on grey: flat colour, or (`shaded`)
    painted with the world's shading and fill pattern."""
    # drawn even when --radius overrides it, so that every other choice of the scene stays the same
    drawn = float(rng.uniform(0.045, 0.15) * SIZE)  # the concept world's small to large radii
    radius = drawn if radius is None else radius
    centre_x, centre_y = rng.uniform(radius + 1, SIZE - radius - 1, 2)
    rgb = COLOURS[NAMES[int(rng.integers(len(NAMES)))]]
    placement = Placement(shape, pattern, rgb, centre_x, centre_y, radius, float(rng.uniform(0, 2 * np.pi)))
    window = shape_mask(placement)
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    height, width = window.mask.shape
    mask[window.top:window.top + height, window.left:window.left + width] = window.mask
    image = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)
    if shaded:
        image[mask] = np.clip(object_paint(placement, window.u[window.mask], window.v[window.mask]), 0, 255)
    else:
        image[mask] = rgb
    ys, xs = np.nonzero(mask)
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32)
    masks = mask[None] if positive else np.zeros((0, SIZE, SIZE), dtype=bool)
    return Example(image, phrase, masks, box[: len(masks)])


@torch.no_grad()
def separation(model: SAM3, examples: list[Example]) -> str:
    positive = np.array([len(e.masks) > 0 for e in examples])
    model.eval()
    outputs = model.detect(*model_inputs(examples, SIZE))
    model.train()
    presence = outputs["presence_logits"][:, 0].numpy() > 0
    semantic = outputs["semantic_seg"][:, 0].sigmoid().flatten(1).amax(1).numpy()
    logit = outputs["pred_logits"].amax(1).numpy()
    return (f"presence acc {np.mean(presence == positive):.2f} | semantic max pos {semantic[positive].mean():.3f} "
            f"neg {semantic[~positive].mean():.3f} | query logit max pos {logit[positive].mean():+.3f} "
            f"neg {logit[~positive].mean():+.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("image", "text", "crowd", "shape", "star", "striped"), default="text")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--side", type=int, default=SIDE, help="side of the squares in pixels (of 128)")
    parser.add_argument("--radius", type=float, default=None,
                        help="shape radius in pixels for --mode shape/star (default: the concept world's 6-19)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--alignment", type=float, default=0.0, help="weight of the region-phrase alignment loss")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SAM3(embedded_config())
    initialize_from_scratch(model)
    source = SquareSource(args.mode, args.side, args.radius)
    held_back = [source.example(10**6 + i) for i in range(64)]
    config = TrainConfig(steps=args.steps, batch_size=16, lr=args.lr, warmup_steps=20,
                         loss=LossWeights(alignment=args.alignment))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, source, config, out)
        start = time.perf_counter()
        for step in range(1, args.steps + 1):
            trainer.train_step()
            if step % args.every == 0:
                print(f"step {step:4d} {time.perf_counter() - start:6.0f} s  {separation(model, held_back)}", flush=True)


if __name__ == "__main__":
    main()
