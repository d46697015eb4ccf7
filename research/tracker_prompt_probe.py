"""Probe: what slows the tracker's image stage, finding where a prompt points or segmenting what is there?

Trains a fresh tracker (the embedded model's detector frozen, its neck copied, as `conceptseg train-tracker`
starts) on single concept-world frames prompted by the object's box, in one of two ways:

- `sparse`: the box as SAM's two corner tokens, as inference gives it. The decoder has to learn to find the
  image tokens whose position encoding matches the corners' before it can segment anything.
- `dense`: the same tokens, plus the box drawn as a filled rectangle into the dense mask prompt, which is added
  to the image embedding at the box's place: the position is given, only the segmentation is learnt.

If `dense` learns much faster, the features hold the objects and the sparse path's localisation is the slow
part. Prints the mean dice loss and mask IoU every 20 steps (each step sees new frames, so both measure
generalisation).

    python research/tracker_prompt_probe.py --prompt sparse --steps 120
    python research/tracker_prompt_probe.py --prompt dense --steps 120
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import conceptseg  # noqa: E402
from conceptseg.data import ConceptWorld  # noqa: E402
from conceptseg.train.data import resize_masks  # noqa: E402
from conceptseg.train.tracker_data import TrackerPromptSampling, TrackerSource  # noqa: E402
from conceptseg.train.tracker_trainer import (  # noqa: E402
    TrackerLossWeights,
    freeze_all_but_tracker,
    initialize_tracker,
    mask_iou,
    prediction_losses,
    tracker_features,
)

WEIGHTS = TrackerLossWeights()


def box_mask_prompt(boxes: torch.Tensor, side: int, image_size: int) -> torch.Tensor:
    """Boxes [B, 4] xyxy in model pixels -> mask-prompt logits [B, 1, side, side]: +10 inside, -10 outside."""
    centres = (torch.arange(side, dtype=boxes.dtype) + 0.5) * image_size / side
    inside_x = (centres >= boxes[:, 0, None]) & (centres <= boxes[:, 2, None])
    inside_y = (centres >= boxes[:, 1, None]) & (centres <= boxes[:, 3, None])
    return (20.0 * (inside_y[:, :, None] & inside_x[:, None, :]).float() - 10.0)[:, None]


def step_losses(model: conceptseg.SAM3, source: TrackerSource, positions: range, dense: bool
                ) -> tuple[torch.Tensor, float, float]:
    """Loss, dice and mean IoU of one batch of box-prompted frames."""
    examples = [source.example(p) for p in positions]
    size = model.config.vit.image_size
    frames = np.stack([example.frames[0] for example in examples])
    levels = tracker_features(model, frames)
    targets = resize_masks(np.stack([example.masks[0] for example in examples]), size)
    boxes = torch.from_numpy(np.stack([example.prompt.box for example in examples]) * size / frames.shape[2])
    mask_input = box_mask_prompt(boxes, levels[0].shape[-1], size) if dense else None
    masks, iou, object_scores = model.tracker.predict_masks(levels, boxes=boxes, mask_input=mask_input,
                                                            multimask=False)
    loss, dice, ious = torch.zeros(()), 0.0, []
    for row, target in enumerate(targets):
        decoded = (masks[row : row + 1], iou[row : row + 1], None, object_scores[row : row + 1])
        terms = prediction_losses(decoded, target, True, WEIGHTS)
        loss = loss + WEIGHTS.total(terms)
        dice += terms["mask_dice"].item()
        upsampled = torch.nn.functional.interpolate(masks[row : row + 1].detach(), size=(size, size),
                                                    mode="bilinear")[0, 0]
        ious.append(float(mask_iou(upsampled > 0, target > 0.5)))
    count = len(examples)
    return loss / count, dice / count, float(np.mean(ious))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", choices=("sparse", "dense"), default="sparse")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = conceptseg.load_model()
    initialize_tracker(model, args.seed)
    params = [p for module in freeze_all_but_tracker(model, train_neck=False) for p in module.parameters()]
    optimiser = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sampling = TrackerPromptSampling(mask_fraction=0.0, box_fraction=1.0)
    source = TrackerSource(ConceptWorld(size=224, split="train", seed=args.seed), sampling, args.seed, num_frames=1)
    dice_history, iou_history = [], []
    for step in range(args.steps):
        for group in optimiser.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 20)
        start = step * args.batch_size
        loss, dice, iou = step_losses(model, source, range(start, start + args.batch_size), args.prompt == "dense")
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        dice_history.append(dice)
        iou_history.append(iou)
        if (step + 1) % 20 == 0:
            print(f"step {step + 1}: dice loss {np.mean(dice_history[-20:]):.3f}, "
                  f"mask IoU {np.mean(iou_history[-20:]):.3f}", flush=True)


if __name__ == "__main__":
    main()
