"""Does the embedded model know the concepts or only the generator's drawings? Held-out styles and image shapes.

    python -m benchmarks.embedded_generalization [--model M] [--pairs 600] [--seed 2027] [--out results.json]

Text prompts through `ImagePredictor.predict(text=...)`, as a user calls it, on concept-world scenes (split
"test", a seed never used in training), scored with SA-Co cgF1. Five suites of `--pairs` pairs each:

  in-distribution          the renderer the model was first trained on, 224x224
  in-distribution 288x216  the same renderer on landscape images (the predictor squashes them to a square)
  held-out style           every training-time variety factor on (`Variety.all`) but drawn with the styles
                           training never sees: one held-out drawing per shape name and a held-out background
                           kind; 224x224
  held-out style 288x216   the same, landscape
  held-out style 216x288   the same, portrait

Three more suites make 35% of the negatives phrases naming a shape alone (elsewhere about 3% do, which is too
few to measure how often such phrases fire on images without their shape): on plain scenes, on held-out-style
scenes with random objects, and on held-out-style scenes holding shapes easily confused with the named one
(diamond beside rotated squares, hexagon beside circles, ...), the curriculum's own measure.

Printed: the SA-Co metrics of every suite; per suite and phrase form, image-level recall on positives and
image-level false-positive rate on negatives (a pair "fires" when anything scores >= 0.5); and, for the
shape-only suites, the false-positive rate of shape-only phrases per shape.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from conceptseg import ImagePredictor, load_model
from conceptseg.data import Variety
from conceptseg.data.synthetic import ConceptWorld
from conceptseg.data.synthetic_export import write_saco_image_benchmark
from conceptseg.eval import evaluate
from conceptseg.eval.cli import SUMMARY_KEYS, format_rows
from conceptseg.eval.inference import DUMP_THRESHOLD
from research.embedded_breakdown import phrase_form

# the held-out drawing styles with the in-distribution phrase mix (no shape-only curriculum), square
HELDOUT_STYLE = replace(Variety.all(styles="heldout"), aspect=False, shape_only_negatives=0.0, shape_confusers=0.0)
SHAPE_ONLY = 0.35  # share of negatives naming a shape alone in the shape-only suites (in the others: about 3%)
SQUARE, LANDSCAPE, PORTRAIT = 224, (216, 288), (288, 216)  # (height, width)
SUITES: dict[str, tuple[int | tuple[int, int], Variety]] = {
    "in-distribution": (SQUARE, Variety()),
    "in-distribution 288x216": (LANDSCAPE, Variety()),
    "held-out style": (SQUARE, HELDOUT_STYLE),
    "held-out style 288x216": (LANDSCAPE, HELDOUT_STYLE),
    "held-out style 216x288": (PORTRAIT, HELDOUT_STYLE),
    "shape-only, plain": (SQUARE, Variety(shape_only_negatives=SHAPE_ONLY)),
    "shape-only, held-out style": (SQUARE, replace(HELDOUT_STYLE, shape_only_negatives=SHAPE_ONLY)),
    "shape-only, confusers": (SQUARE, replace(HELDOUT_STYLE, shape_only_negatives=SHAPE_ONLY, shape_confusers=1.0)),
}
SHAPE_ONLY_SUITES = ("shape-only, plain", "shape-only, held-out style", "shape-only, confusers")
FIRES = 0.5  # the score at which cgF1 counts a prediction, and so an image-level "yes"


def run_suite(predictor: ImagePredictor, world: ConceptWorld, pairs: int, folder: Path) -> tuple[dict, list[dict]]:
    """SA-Co metrics of one suite and one record per pair (form, shape, positive, fired)."""
    samples = [world.sample(index) for index in range(pairs)]
    gt = write_saco_image_benchmark(folder, samples, {"seed": world.seed, "split": world.split})
    predictions, records = [], []
    for pair_id, sample in enumerate(samples, start=1):
        predictor.set_image(sample.image)
        result = predictor.predict(text=sample.phrase, threshold=DUMP_THRESHOLD)
        predictions.extend(result.to_coco(pair_id))
        records.append({"form": phrase_form(sample), "shape_only": not sample.concept.named_attributes[1:],
                        "shape": sample.concept.shape,
                        "positive": bool(len(sample.target_indices)),
                        "fired": bool((result.scores >= FIRES).any())})
    metrics = evaluate(gt, predictions)
    return {key: metrics[key] for key in SUMMARY_KEYS}, records


def rates(records: list[dict], key: str) -> dict[str, dict[str, float]]:
    """Per value of `key`: positives and image-level recall, negatives and image-level false-positive rate."""
    groups = defaultdict(list)
    for record in records:
        groups[record[key]].append(record)
    table = {}
    for value, group in sorted(groups.items()):
        positives = [r["fired"] for r in group if r["positive"]]
        negatives = [r["fired"] for r in group if not r["positive"]]
        table[value] = {"positives": len(positives), "IL_recall": float(np.mean(positives)) if positives else None,
                        "negatives": len(negatives), "IL_FPR": float(np.mean(negatives)) if negatives else None}
    return table


def format_rates(title: str, table: dict[str, dict[str, float]]) -> str:
    lines = [f"{title:28s}{'positives':>10s}{'IL recall':>10s}{'negatives':>10s}{'IL FPR':>8s}"]
    for value, row in table.items():
        recall = "-" if row["IL_recall"] is None else f"{row['IL_recall']:.2f}"
        fpr = "-" if row["IL_FPR"] is None else f"{row['IL_FPR']:.2f}"
        lines.append(f"  {value:26s}{row['positives']:10d}{recall:>10s}{row['negatives']:10d}{fpr:>8s}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("--pairs", type=int, default=600, help="pairs per suite")
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--out", type=Path, default=None, help="also write every number to this JSON file")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    predictor = ImagePredictor(load_model(args.model))
    results, breakdown = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, (size, variety)) in enumerate(SUITES.items()):
            started = time.perf_counter()
            world = ConceptWorld(size=size, split="test", seed=args.seed, variety=variety)
            metrics, records = run_suite(predictor, world, args.pairs, Path(scratch) / f"suite{index}")
            shape_only = [r for r in records if r["shape_only"]]
            results[name] = metrics | {"shape_only_IL_FPR": rates(shape_only, "shape_only").get(True, {}).get("IL_FPR"),
                                       "seconds": round(time.perf_counter() - started, 1)}
            breakdown[name] = {"form": rates(records, "form"), "shape-only, per shape": rates(shape_only, "shape")}
            print(f"{name}: cgF1 {metrics['cgF1']:.1f} ({results[name]['seconds']} s)", flush=True)
    print("\n" + format_rows(results, label="suite"))
    print("\nshape-only phrases, image-level false-positive rate: " + ", ".join(
        f"{name} {row['shape_only_IL_FPR']:.2f}" for name, row in results.items()
        if row["shape_only_IL_FPR"] is not None))
    for name in SUITES:
        print("\n" + format_rates(f"{name}: phrase form", breakdown[name]["form"]))
    for name in SHAPE_ONLY_SUITES:
        print("\n" + format_rates(f"{name}: per shape", breakdown[name]["shape-only, per shape"]))
    if args.out:
        args.out.write_text(json.dumps({"suites": results, "breakdown": breakdown}, indent=2))


if __name__ == "__main__":
    main()
