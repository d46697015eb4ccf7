"""Does a model's presence score tell positives from negatives? A check that works long before cgF1 does.

    python research/presence_separation.py runs/NAME/model    # the EMA weights a training run saves

cgF1 stays 0 until some score passes 0.5; the AUC of the presence probability of positive concept-world test
samples against negative ones shows whether the words are being used at all (0.5: not at all). The script
prints that AUC and, per kind of sample (positive, hard negative, easy negative), the mean presence probability,
the mean best instance score (query x presence) and the share of samples whose best score passes 0.5.
Results: docs/embedded-model-runs.md, runs 9-17.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch

from conceptseg import load_model
from conceptseg.data.batch import model_inputs
from conceptseg.data.examples import example_from_sample
from conceptseg.data.synthetic import ConceptWorld


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model directory or checkpoint")
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--seed", type=int, default=77, help="seed of the concept world's test split")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    size = model.config.vit.image_size
    world = ConceptWorld(size=size, split="test", seed=args.seed)
    samples = [world.sample(i) for i in range(args.samples)]
    by_kind: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with torch.no_grad():
        for first in range(0, len(samples), 32):
            chunk = samples[first:first + 32]
            outputs = model.detect(*model_inputs([example_from_sample(s) for s in chunk], size))
            presence = outputs["presence_logits"][:, 0].sigmoid()
            best = (outputs["pred_logits"].sigmoid() * presence[:, None]).amax(1)
            for sample, p, score in zip(chunk, presence.tolist(), best.tolist()):
                by_kind[sample.kind].append((p, score))
    positives = np.array([p for p, _ in by_kind["positive"]])
    negatives = np.array([p for kind, rows in by_kind.items() if kind != "positive" for p, _ in rows])
    print(f"presence AUC, positives vs negatives: {(positives[:, None] > negatives[None, :]).mean():.3f}")
    for kind, rows in sorted(by_kind.items()):
        values = np.array(rows)
        print(f"{kind:14s} n={len(values):3d}  presence {values[:, 0].mean():.3f}  best score "
              f"{values[:, 1].mean():.3f}  best > 0.5: {(values[:, 1] > 0.5).mean():.2f}")


if __name__ == "__main__":
    main()
