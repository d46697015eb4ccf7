"""Full-size parity benchmark: conceptseg vs transformers' Sam3Model with the same random weights.

Random released-size weights (840 M parameters), one 1008x1008 image, four prompt cases. Each implementation
runs in its own process so that its peak RSS is its own. Prints the max relative error per output (target
<= 1e-3) and both implementations' wall time per case and peak RSS.

    python benchmarks/parity_full.py [--threads 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

OUTPUTS = ("pred_logits", "presence_logits", "pred_boxes", "pred_masks", "semantic_seg")


def cases() -> dict[str, dict]:
    """Prompt cases: (texts, boxes normalised cxcywh, labels with -1 padding)."""
    box = [[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]]
    return {
        "text": dict(texts=["a yellow school bus"], boxes=None, labels=None),
        "boxes": dict(texts=["visual"], boxes=[box], labels=[[1, 1]]),
        "text+boxes": dict(texts=["red car"], boxes=[box], labels=[[1, 0]]),
        "batch2": dict(texts=["cat", "striped hexagon"], boxes=[box, [[0.5, 0.5, 0.4, 0.4], [0, 0, 0, 0]]],
                       labels=[[1, 0], [1, -1]]),
    }


def image() -> torch.Tensor:
    return torch.randn(1, 3, 1008, 1008, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)


def run_reference(workdir: Path) -> dict:
    from hf_reference import hf_model_for

    from conceptseg import SAM3Config, tokenize

    model = hf_model_for(SAM3Config(), seed=0)
    model.save_pretrained(workdir / "hf")
    outputs, times = {}, {}
    pixels = image()
    with torch.inference_mode():
        for name, case in cases().items():
            ids = tokenize(case["texts"])
            batch = ids.shape[0]
            if case["boxes"] is None:  # official semantics: the geometry CLS token is always there
                boxes, labels = torch.tensor([[[0.5, 0.5, 0.1, 0.1]]] * batch), torch.full((batch, 1), -10)
            else:
                boxes, labels = torch.tensor(case["boxes"]), torch.tensor(case["labels"]).masked_fill(
                    torch.tensor(case["labels"]) < 0, -10)
            start = time.perf_counter()
            out = model(pixel_values=pixels.expand(batch, -1, -1, -1), input_ids=ids,
                        attention_mask=(ids != 0).long(), input_boxes=boxes, input_boxes_labels=labels)
            times[name] = time.perf_counter() - start
            outputs[name] = {k: getattr(out, k) for k in OUTPUTS}
    torch.save(outputs, workdir / "reference.pt")
    return times


def run_ours(workdir: Path) -> dict:
    from conceptseg import load_model, tokenize

    model = load_model(workdir / "hf")
    outputs, times = {}, {}
    pixels = image()
    with torch.inference_mode():
        for name, case in cases().items():
            ids = tokenize(case["texts"])
            boxes = None if case["boxes"] is None else torch.tensor(case["boxes"])
            labels = None if case["labels"] is None else torch.tensor(case["labels"])
            start = time.perf_counter()
            out = model.detect(pixels, ids, boxes=boxes, box_labels=labels)
            times[name] = time.perf_counter() - start
            outputs[name] = {k: out[k] for k in OUTPUTS}
    torch.save(outputs, workdir / "ours.pt")
    return times


def child(which: str, workdir: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    times = (run_reference if which == "reference" else run_ours)(workdir)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    (workdir / f"{which}.json").write_text(json.dumps({"times": times, "peak_rss_gib": peak_gib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", choices=["reference", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="parity_full_"))
    if args.child:
        child(args.child, workdir, args.threads)
        return
    for which in ("reference", "ours"):
        print(f"running {which} ...", flush=True)
        subprocess.run([sys.executable, __file__, "--child", which, "--workdir", str(workdir),
                        "--threads", str(args.threads)], check=True)
    reference, ours = torch.load(workdir / "reference.pt"), torch.load(workdir / "ours.pt")
    stats = {w: json.loads((workdir / f"{w}.json").read_text()) for w in ("reference", "ours")}
    print(f"\nrandom full-size weights, 1008x1008, {args.threads} threads, torch {torch.__version__}")
    print(f"{'case':12s}" + "".join(f"{k:>16s}" for k in OUTPUTS) + "  top5   t_hf(s)  t_ours(s)")
    worst = 0.0
    for name in cases():
        errors = [((ours[name][k] - reference[name][k]).abs().max() / reference[name][k].abs().max()).item()
                  for k in OUTPUTS]
        worst = max(worst, *errors)
        top5 = all(torch.equal(a.topk(5).indices, b.topk(5).indices)
                   for a, b in zip(ours[name]["pred_logits"], reference[name]["pred_logits"]))
        print(f"{name:12s}" + "".join(f"{e:16.2e}" for e in errors)
              + f"  {top5!s:5s} {stats['reference']['times'][name]:8.1f} {stats['ours']['times'][name]:9.1f}")
    print(f"peak RSS: transformers {stats['reference']['peak_rss_gib']:.2f} GiB, "
          f"conceptseg {stats['ours']['peak_rss_gib']:.2f} GiB")
    print(f"max relative error {worst:.2e} ({'PASS' if worst <= 1e-3 else 'FAIL'} at 1e-3)")


if __name__ == "__main__":
    main()
