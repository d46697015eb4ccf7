"""ONNX Runtime against PyTorch at full size: export time, speed of each graph, and how far the outputs move.

    python -m benchmarks.onnx_full [--threads 2] [--out DIR]

Random released-size weights (seed 0, as `benchmarks/int8_full.py`), one 1008 px image. Exports the two graphs
(`conceptseg.onnx.export_onnx`; with --out, an export already there is reused), then times the image encoder and
the detector graph for 1 and 10 phrases in PyTorch (as `ImagePredictor` runs them: on a CPU at full size the 10
phrases go through the fusion encoder and decoder one at a time) and in ONNX Runtime (one phrase per run, as
`OnnxPredictor` does at full size; both with the same number of threads), and prints the relative error
max|ort - torch| / max|torch| of every output. The first run of each ONNX Runtime session is timed apart (it
allocates and plans). The PyTorch model is freed before the sessions are made: 24 GiB do not hold all three.
"""

from __future__ import annotations

import argparse
import functools
import gc
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PHRASES = ["a red car", "person", "yellow school bus", "dog", "traffic light", "bicycle", "tree", "window",
           "striped umbrella", "the cat on the left"]


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def progress(rows: list) -> None:
    """The last row so far and the peak RSS, as the run goes (a full-size run takes minutes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"... {rows[-1][0]}: {rows[-1][1]:.1f} s (peak RSS so far {peak:.1f} GiB)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="export folder (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    from conceptseg import SAM3, tokenize
    from conceptseg.model.configs import SAM3Config
    from conceptseg.onnx import export_onnx
    from conceptseg.onnx.export import DETECTOR, DETECTOR_OUTPUTS, IMAGE_ENCODER, MANIFEST
    from conceptseg.onnx.runtime import run_detector

    torch.manual_seed(0)
    model = SAM3(SAM3Config()).eval()
    pixels = torch.rand(1, 3, 1008, 1008) * 2 - 1
    with tempfile.TemporaryDirectory() as temporary:
        out = args.out or Path(temporary)
        if args.out is not None and (out / MANIFEST).exists():
            rows = [("export: kept from an earlier run in --out", 0.0, None)]
        else:
            _, export_seconds = timed(export_onnx, model, out)
            rows = [("export (both graphs)", export_seconds, None)]
        progress(rows)

        with torch.inference_mode():
            encoding, seconds = timed(model.encode_image, pixels)
            rows.append(("image encoder: torch", seconds, None))
            torch_out = {}
            for count in (1, 10):
                detect = functools.partial(model.detect, encoding, tokenize(PHRASES[:count]), prompt_chunk=1)
                torch_out[count], seconds = timed(detect)
                rows.append((f"detector, {count} phrase(s): torch", seconds, None))

        torch_levels = [level.numpy() for level in encoding.levels]
        torch_out = {count: {name: out[name].numpy() for name in DETECTOR_OUTPUTS} for count, out in torch_out.items()}
        del model, encoding  # the ONNX Runtime sessions need the memory (at full size, 24 GiB holds not all three)
        gc.collect()
        progress(rows)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        images, session_seconds = timed(onnxruntime.InferenceSession, str(out / IMAGE_ENCODER), options)
        detector, detector_session_seconds = timed(onnxruntime.InferenceSession, str(out / DETECTOR), options)
        rows.append(("ort sessions created", session_seconds + detector_session_seconds, None))
        progress(rows)
        feeds = {"pixel_values": pixels.numpy()}
        _, first = timed(images.run, None, feeds)
        levels, seconds = timed(images.run, None, feeds)
        errors = [float(np.abs(a - e).max() / np.abs(e).max()) for a, e in zip(levels, torch_levels)]
        rows.append(("image encoder: ort (first run)", first, None))
        rows.append(("image encoder: ort", seconds, max(errors)))
        progress(rows)
        for count in (1, 10):
            # one phrase per run, as OnnxPredictor runs it at full size (all 10 at once need ~9 GB per attention)
            detect = functools.partial(run_detector, detector, levels, tokenize(PHRASES[:count]).numpy(), 1)
            if count == 1:
                _, first = timed(detect)
                rows.append(("detector, 1 phrase(s): ort (first run)", first, None))
            outputs, seconds = timed(detect)
            error = max(float(np.abs(outputs[name] - expected).max() / np.abs(expected).max())
                        for name, expected in torch_out[count].items())
            rows.append((f"detector, {count} phrase(s): ort", seconds, error))
            progress(rows)

    rows.append(("peak RSS (GiB, whole run)", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, None))
    print(f"threads {args.threads}, random full-size weights, 1008 px; error: max|ort - torch| / max|torch| "
          "over the outputs (ort on ort's own image features)")
    print("| step | seconds | relative error |")
    print("|---|---|---|")
    for name, seconds, error in rows:
        print(f"| {name} | {seconds:.2f} | {'' if error is None else f'{error:.1e}'} |")


if __name__ == "__main__":
    main()
