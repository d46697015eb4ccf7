"""Where a model loses cgF1 on the concept world: results per phrase form, and the errors on positives.

    python research/embedded_breakdown.py [--model runs/NAME/model] [--pairs 1000] [--seed 2026]
        [--size 224 | --size 216x288] [--variety all,heldout]

For each phrase form (the attributes a phrase names besides its shape, and whether it is plural) it prints how
often a positive pair gets any prediction (image-level recall) and how often a negative pair does (image-level
false-positive rate). For positive pairs it then splits the instance errors at mask IoU 0.5 (one-to-one
matching) and prints the matched masks' IoU quantiles: the two halves of pmF1.
`--variety` draws the scenes with training-time variety or held-out styles (`conceptseg.data.Variety.parse`),
`--size HxW` on non-square images; `benchmarks/embedded_generalization.py` runs the usual combinations.
Results: docs/embedded-model-runs.md, "What the shipped model gets wrong".
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch

from conceptseg import ImagePredictor, load_model
from conceptseg.data import Variety
from conceptseg.data.synthetic import ConceptWorld, Sample
from conceptseg.eval.cgf1 import matched_ious


def parse_size(text: str) -> int | tuple[int, int]:
    """"224" -> 224; "216x288" -> (216, 288) (height, width)."""
    height, _, width = text.lower().partition("x")
    return (int(height), int(width)) if width else int(height)


def phrase_form(sample: Sample) -> str:
    """e.g. "colour+pattern, plural"; "shape" for a bare noun."""
    named = "+".join(sample.concept.named_attributes[1:]) or "shape"
    return named + (", plural" if sample.concept.plural else "")


def mask_ious(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """IoU [P, T] between boolean masks [P, H, W] and [T, H, W] (either may be empty)."""
    pixels = predicted.shape[1] * predicted.shape[2]
    p = predicted.reshape(len(predicted), pixels).astype(np.float32)
    t = target.reshape(len(target), pixels).astype(np.float32)
    overlap = p @ t.T
    return overlap / np.maximum(p.sum(1)[:, None] + t.sum(1)[None] - overlap, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--size", type=parse_size, default=224, help="scene side, or HEIGHTxWIDTH, in pixels")
    parser.add_argument("--variety", type=Variety.parse, default=Variety(),
                        help="how scenes are drawn (none, all, all,heldout, blur,jpeg, ...)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    predictor = ImagePredictor(load_model(args.model))
    world = ConceptWorld(size=args.size, split="test", seed=args.seed, variety=args.variety)

    found = defaultdict(lambda: {"positive": [], "negative": []})  # form -> kind -> [pair got a prediction]
    all_matched, true_positives, false_positives, false_negatives = [], 0, 0, 0
    for index in range(args.pairs):
        sample = world[index]
        predictor.set_image(sample.image)
        result = predictor.predict(sample.phrase)
        kind = "positive" if len(sample.target_indices) else "negative"
        found[phrase_form(sample)][kind].append(len(result) > 0)
        if kind == "negative":
            continue
        matched = matched_ious(mask_ious(result.masks, sample.masks))
        all_matched.extend(matched.tolist())
        hits = int((matched >= 0.5).sum())
        true_positives += hits
        false_positives += len(result) - hits
        false_negatives += len(sample.target_indices) - hits

    print(f"{'phrase form':28s}{'positives':>10s}{'IL recall':>10s}{'negatives':>10s}{'IL FPR':>8s}")
    for form in sorted(found):
        positives, negatives = found[form]["positive"], found[form]["negative"]
        recall = f"{np.mean(positives):.2f}" if positives else "-"
        fpr = f"{np.mean(negatives):.2f}" if negatives else "-"
        print(f"{form:28s}{len(positives):10d}{recall:>10s}{len(negatives):10d}{fpr:>8s}")
    quantiles = np.percentile(all_matched, [10, 25, 50, 75, 90]) if all_matched else []
    print(f"\npositives at mask IoU 0.5: {true_positives} TP, {false_positives} FP, {false_negatives} FN "
          f"(F1 {2 * true_positives / max(2 * true_positives + false_positives + false_negatives, 1):.3f})")
    print("matched mask IoU quantiles 10/25/50/75/90%: " + " ".join(f"{q:.2f}" for q in quantiles))


if __name__ == "__main__":
    main()
