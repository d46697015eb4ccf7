"""int8 against fp32 at full size: speed of a forward, and how far the int8 features and detections move.

    python -m benchmarks.int8_full [--threads 2]

Random released-size weights (seed 0), one 1008 px image, the four prompt cases of `benchmarks/parity_full.py`.
fp32 first, then the same model quantized in place (`conceptseg.model.quantize.quantize_int8`). Printed: time of
the image encoding and of each prompt case (one forward = encoding + the text case), the relative error
||int8 - fp32|| / ||fp32|| of the trunk map and of each neck level, and per case how many of the fp32 top-5
queries (by score) are in the int8 top 5. Forward hooks also clock the layers int8 converts, which splits a
forward's time into what int8 can speed up and what it cannot (the bound on the speed-up). Random weights make
the scores nearly flat, so the top-5 overlap there is a harsh test; the embedded model's cgF1
(benchmarks/embedded_quality.py --quantize int8) is the meaningful quality check.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.parity_full import cases


class LayerClock:
    """Seconds spent inside the named modules (the layers int8 converts), for the arithmetic of the speed-up."""

    def __init__(self, model, names: set[str]) -> None:
        self.seconds = 0.0
        self._handles = []
        for name in names:
            module = model.get_submodule(name)
            self._handles.append(module.register_forward_pre_hook(self._start))
            self._handles.append(module.register_forward_hook(self._stop))

    def _start(self, *_) -> None:
        self._started = time.perf_counter()

    def _stop(self, *_) -> None:
        self.seconds += time.perf_counter() - self._started

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def run(model, pixels: torch.Tensor, clock: LayerClock) -> tuple[dict, dict, dict, float]:
    """Encoding time, features, per case (time, scores), and the seconds of one forward (encoding + text case)
    spent in the clocked layers."""
    from conceptseg import tokenize

    started = time.perf_counter()
    encoding = model.encode_image(pixels)
    timings = {"image encoding": time.perf_counter() - started}
    features = {"trunk": encoding.trunk, **{f"neck level {i}": level for i, level in enumerate(encoding.levels)}}
    scores = {}
    for name, case in cases().items():
        boxes = None if case["boxes"] is None else torch.tensor(case["boxes"])
        labels = None if case["labels"] is None else torch.tensor(case["labels"])
        started = time.perf_counter()
        out = model.detect(encoding, tokenize(case["texts"]), boxes=boxes, box_labels=labels)
        timings[name] = time.perf_counter() - started
        scores[name] = out["pred_logits"].sigmoid() * out["presence_logits"].sigmoid()
        if name == "text":
            forward_layer_seconds = clock.seconds
    return timings, features, scores, forward_layer_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from conceptseg import SAM3
    from conceptseg.model.configs import SAM3Config
    from conceptseg.model.quantize import int8_layers, quantize_int8

    torch.manual_seed(0)
    model = SAM3(SAM3Config()).eval()
    pixels = torch.rand(1, 3, 1008, 1008) * 2 - 1
    layers = int8_layers(model)
    with torch.inference_mode():
        clock = LayerClock(model, layers)
        reference = run(model, pixels, clock)
        clock.remove()
        quantize_int8(model)
        clock = LayerClock(model, layers)
        quantized = run(model, pixels, clock)
        clock.remove()
    print(f"threads {args.threads}, random full-size weights, 1008 px")
    print("| step | fp32 s | int8 s | speed-up |")
    print("|---|---|---|---|")
    for name, fp32_seconds in reference[0].items():
        print(f"| {name} | {fp32_seconds:.2f} | {quantized[0][name]:.2f} | {fp32_seconds / quantized[0][name]:.2f}x |")
    forward = [timings["image encoding"] + timings["text"] for timings in (reference[0], quantized[0])]
    print(f"| **forward (encoding + text)** | {forward[0]:.2f} | {forward[1]:.2f} | {forward[0] / forward[1]:.2f}x |")
    layer_seconds = [reference[3], quantized[3]]
    rest = [forward[0] - layer_seconds[0], forward[1] - layer_seconds[1]]
    print(f"\nWhere the forward's speed-up comes from: its {len(layers)} int8 layers take {layer_seconds[0]:.1f} s in "
          f"fp32 and {layer_seconds[1]:.1f} s in int8 ({layer_seconds[0] / layer_seconds[1]:.2f}x); everything "
          f"else {rest[0]:.1f} s and {rest[1]:.1f} s. Were the int8 layers free, the speed-up would be at most "
          f"{forward[0] / rest[1]:.2f}x.")
    print("\n| features | relative error | cosine |")
    print("|---|---|---|")
    for name, fp32_map in reference[1].items():
        int8_map = quantized[1][name]
        error = ((int8_map - fp32_map).norm() / fp32_map.norm()).item()
        cosine = torch.nn.functional.cosine_similarity(fp32_map.flatten().double(), int8_map.flatten().double(), dim=0).item()
        print(f"| {name} | {error:.4f} | {cosine:.5f} |")
    print("\n| case | fp32 top-5 queries in the int8 top 5 (per prompt) |")
    print("|---|---|")
    for name, fp32_scores in reference[2].items():
        overlaps = [len(set(a.topk(5).indices.tolist()) & set(b.topk(5).indices.tolist()))
                    for a, b in zip(fp32_scores, quantized[2][name])]
        print(f"| {name} | {', '.join(f'{n}/5' for n in overlaps)} |")


if __name__ == "__main__":
    main()
