"""Quality of a model on freshly generated concept-world benchmarks (SA-Co metrics).

    python benchmarks/embedded_quality.py [--model runs/NAME/model] [--pairs 1000] [--seed 2026] [--quantize int8]
        [--only text]

Three benchmarks, generated with a seed never used in training (training draws split "train"):
  text      split "test": text prompts, >= 40% negatives (mostly hard ones)
  heldout   split "heldout": phrases naming the colour-shape pairs never seen in training
  exemplar  split "test": "visual" + one positive exemplar box; targets share the boxed shape and colour.
            Every exemplar pair is positive, so IL_MCC (and with it cgF1) is degenerate there: pmF1 and
            IL recall are the meaningful numbers (benchmarks/cross_image_exemplars.py has negatives).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from conceptseg import load_model
from conceptseg.data import export_saco_image_benchmark
from conceptseg.eval.cli import SUMMARY_KEYS, format_rows
from conceptseg.eval.model_eval import evaluate_model

BENCHMARKS = {"text": ("test", "text"), "heldout": ("heldout", "text"), "exemplar": ("test", "exemplar")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("--pairs", type=int, default=1000, help="pairs of the text benchmark (others: half)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=None, help="also write the metrics to this JSON file")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quantize", choices=("int8",), default=None, help="measure the int8 path")
    parser.add_argument("--only", choices=tuple(BENCHMARKS), action="append", help="run only these benchmarks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, quantize=args.quantize)
    size = 224
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, (split, prompt) in BENCHMARKS.items():
            if args.only and name not in args.only:
                continue
            pairs = args.pairs if name == "text" else args.pairs // 2
            gt = export_saco_image_benchmark(Path(scratch) / name, pairs, args.seed, split=split, size=size,
                                             prompt=prompt)
            start = time.perf_counter()
            metrics = evaluate_model(model, gt, gt.parent / "images", prompt=prompt)
            results[name] = {key: metrics[key] for key in SUMMARY_KEYS}
            results[name]["seconds"] = round(time.perf_counter() - start, 1)
    print(format_rows(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
