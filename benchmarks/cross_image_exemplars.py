"""Exemplars across images: one positive box on a reference scene prompts another scene (SA-Co metrics).

    python benchmarks/cross_image_exemplars.py [--model runs/NAME/model] [--pairs 1000] [--seed 2026]

Targets are the concept world's text pairs (split "test") whose phrase names just a colour and a shape ("red
stars"), positives and (mostly hard) negatives alike: every instance of that colour and shape is a target. Each
gets a reference: another scene of the split with a boxed instance of that colour and shape (the exemplar
benchmark's scenes). Same-image exemplar pairs are all positive, which leaves IL_MCC and cgF1 undefined; these
pairs have negatives, so both mean something. The same targets prompted by their phrase are scored for comparison.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from conceptseg import load_model, tokenize
from conceptseg.data import ConceptWorld, Sample, write_saco_image_benchmark
from conceptseg.data.batch import model_inputs
from conceptseg.eval import evaluate
from conceptseg.eval.cli import format_rows
from conceptseg.eval.dataset import SacoDataset
from conceptseg.eval.model_eval import detections_to_coco, evaluating, predict_dataset
from conceptseg.model.tokenizer import EXEMPLAR_TEXT
from conceptseg.predict.transforms import preprocess_batch

REFERENCE_POOL = 3000  # exemplar scenes searched for references: every colour-shape pair occurs many times


def colour_shape_pairs(world: ConceptWorld, count: int) -> Iterator[tuple[Sample, Sample]]:
    """(target, reference) pairs: text pairs naming a colour and a shape only, each with a reference scene (in
    turn, from the exemplar stream) whose boxed instance has that colour and shape."""
    references: dict[tuple[str, str], list[int]] = {}
    for index in range(REFERENCE_POOL):
        concept = world.exemplar_sample(index).concept
        references.setdefault((concept.shape, concept.colour), []).append(index)
    used = dict.fromkeys(references, 0)
    found = 0
    for index in itertools.count():
        target = world.sample(index)
        concept = target.concept
        key = (concept.shape, concept.colour)
        if concept.size or concept.pattern or key not in references:
            continue
        reference = world.exemplar_sample(references[key][used[key] % len(references[key])])
        used[key] += 1
        yield target, reference
        found += 1
        if found == count:
            return


def predict_cross(model, targets: SacoDataset, references: SacoDataset, batch_size: int = 32) -> list[dict]:
    """COCO results of every target prompted by the exemplar of its reference (same index)."""
    size = model.config.vit.image_size
    results = []
    with evaluating(model):
        for start in range(0, len(targets), batch_size):
            indices = range(start, min(start + batch_size, len(targets)))
            reference_pixels, _, boxes, labels = model_inputs([references[i] for i in indices], size)
            exemplars = model.encode_exemplars(reference_pixels, boxes, labels)
            target_pixels = preprocess_batch([targets[i].image for i in indices], size)
            outputs = model.detect(target_pixels, tokenize([EXEMPLAR_TEXT]), exemplars=exemplars)
            for row, index in enumerate(indices):
                results += detections_to_coco(outputs, row, targets.pairs[index], model.mask_threshold)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    world = ConceptWorld(size=224, split="test", seed=args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        pairs = list(colour_shape_pairs(world, args.pairs))
        info = {"description": "cross-image exemplars", "seed": args.seed, "split": "test", "size": 224}
        target_gt = write_saco_image_benchmark(Path(scratch) / "targets", (t for t, _ in pairs), info)
        reference_gt = write_saco_image_benchmark(Path(scratch) / "references", (r for _, r in pairs), info,
                                                  prompt="exemplar")
        targets = SacoDataset(target_gt, target_gt.parent / "images", "text")
        references = SacoDataset(reference_gt, reference_gt.parent / "images", "exemplar")
        start = time.perf_counter()
        results = {"cross-image exemplar": evaluate(target_gt, predict_cross(model, targets, references))}
        seconds = time.perf_counter() - start
        results["text (same targets)"] = evaluate(target_gt, predict_dataset(model, targets))
    print(f"{len(pairs)} targets ({sum(len(t.target_indices) > 0 for t, _ in pairs)} positive); exemplar "
          f"inference and scoring {seconds:.0f} s")
    print(format_rows(results, label="prompt"))


if __name__ == "__main__":
    main()
