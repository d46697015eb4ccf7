"""Can the embedded ViT trunk, trained from scratch, tell a star from other shapes? A plain classifier probe.

    python research/shape_probe.py --stem linear   # SAM 3's linear 8-pixel patch embedding
    python research/shape_probe.py --stem conv     # the embedded model's convolutional stem
    python research/shape_probe.py --task striped  # striped or not, instead of star or not

The scenes are `research/text_binding_probe.py --mode star`'s: one solid concept-world shape (10 kinds, radius
6-19 px, any of 8 colours) on grey; positive iff it is a star (50%). The trunk of the embedded config, followed
by a max over the token grid and a linear layer, is trained with binary cross-entropy (AdamW, batch 16); every
--every steps the script prints the accuracy on 256 held-back scenes. No detector, no text: this isolates seeing shapes.
With --task striped the scenes are `--mode striped`'s instead: positive iff the shape is striped (not solid or
dotted), which isolates seeing fill patterns. Results: docs/embedded-model-runs.md, "Seeing shapes".
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
from torch import nn

from conceptseg.model.configs import embedded_config
from conceptseg.model.vit import ViT
from conceptseg.predict.transforms import preprocess_batch

# Scripts import one another by package path from the repository root, which `python -m research.shape_probe`
# puts on sys.path and `python research/shape_probe.py` does not (it puts research/ there).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from research.text_binding_probe import SquareSource  # noqa: E402


def batch(source: SquareSource, start: int, size: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    examples = [source.example(start + i) for i in range(size)]
    images = preprocess_batch([e.image for e in examples], image_size)
    return images, torch.tensor([float(len(e.masks) > 0) for e in examples])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stem", choices=("linear", "conv"), default="conv")
    parser.add_argument("--task", choices=("star", "striped"), default="star")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = dataclasses.replace(embedded_config().vit, conv_stem=args.stem == "conv")
    trunk, head = ViT(config), nn.Linear(config.width, 1)
    nn.init.normal_(trunk.pos_embed, std=0.02)
    optimizer = torch.optim.AdamW([*trunk.parameters(), *head.parameters()], lr=args.lr, weight_decay=0.05)
    source = SquareSource(args.task)
    held_back, labels = batch(source, 10**6, 256, config.image_size)

    def logits(images: torch.Tensor) -> torch.Tensor:
        return head(trunk(images).amax((2, 3)))[:, 0]

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        images, targets = batch(source, step * 16, 16, config.image_size)
        loss = nn.functional.binary_cross_entropy_with_logits(logits(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            with torch.no_grad():
                accuracy = ((logits(held_back) > 0).float() == labels).float().mean().item()
            print(f"step {step:4d} {time.perf_counter() - start:5.0f} s  accuracy {accuracy:.2f}", flush=True)


if __name__ == "__main__":
    main()
