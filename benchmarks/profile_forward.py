"""Where a full-size forward's time goes: time, FLOPs and GFLOP/s per box of the diagram, next to a plain GEMM.

    python benchmarks/profile_forward.py [--threads 2] [--ops 15] [--phrases 10]

Random released-size weights (840 M parameters), one 1008 px image, one phrase, `SAM3.detect` as `ImagePredictor` calls
it. After one warm-up forward, one timed forward with a clock on each box (forward hooks): ViT trunk, detector
neck, text encoder, geometry encoder, fusion encoder, decoder (+ box head), scorer, segmentation head. FLOPs
come from torch's FlopCounterMode (matmuls and convolutions; attention added as 2·B·h·Nq·Nk·(d + d_v)), so
"GFLOP/s" is the box's useful arithmetic over its wall time. The reference is a plain fp32 GEMM at the ViT's
MLP shape, timed in the same process: a box at that rate does nothing but its arithmetic. Then the ViT's
operators by self time (torch.profiler), which shows what besides matmuls costs.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.utils.flop_counter import FlopCounterMode

BOXES = {  # printed name -> (module path in SAM3, FlopCounterMode name)
    "ViT trunk": ("backbone.trunk", "ViT"),
    "detector neck": ("backbone.neck", "Neck"),
    "text encoder": ("detector.text_encoder", "TextEncoder"),
    "geometry encoder": ("detector.geometry_encoder", "Detector.geometry_encoder"),
    "fusion encoder": ("detector.fusion_encoder", "Detector.fusion_encoder"),
    "decoder": ("detector.decoder", "Detector.decoder"),
    "scorer": ("detector.scorer", "Detector.scorer"),
    "segmentation head": ("detector.segmentation_head", "Detector.segmentation_head"),
}


def attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """Scores (Q·K^T) and the weighted sum (P·V) of one scaled-dot-product attention call, from shapes."""
    *batch, queries, dim = query
    keys, value_dim = key[-2], value[-1]
    count = 1
    for size in batch:
        count *= size
    return 2 * count * queries * keys * (dim + value_dim)


def gemm_rate(tokens: int, width: int, hidden: int, repeats: int = 8) -> float:
    """GFLOP/s of a plain fp32 [tokens, width] x [width, hidden] matmul (the ViT MLP's first layer), best of
    `repeats`: the machine's rate, not its worst moment."""
    a, b = torch.randn(tokens, width), torch.randn(width, hidden)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call also warms up
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * tokens * width * hidden / best / 1e9


def attention_rate(heads: int, tokens: int, head_dim: int, repeats: int = 4) -> float:
    """GFLOP/s of a plain self-attention (scaled_dot_product_attention) over [1, heads, tokens, head_dim], best of
    `repeats`: what an attention box can reach at that shape (a head width of 32 keeps it well below a GEMM)."""
    q, k, v = (torch.randn(1, heads, tokens, head_dim) for _ in range(3))
    best = float("inf")
    for _ in range(repeats + 1):
        started = time.perf_counter()
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
        best = min(best, time.perf_counter() - started)
    return attention_flops(q.shape, k.shape, v.shape) / best / 1e9


def timed_forward(model, pixels, ids) -> dict[str, float]:
    """One forward with a wall clock on every box (seconds)."""
    seconds: dict[str, float] = defaultdict(float)
    handles = []
    for name, (path, _) in BOXES.items():
        module = model.get_submodule(path)
        starts: list[float] = []
        handles.append(module.register_forward_pre_hook(lambda *_, s=starts: s.append(time.perf_counter())))
        handles.append(module.register_forward_hook(
            lambda *_, s=starts, n=name: seconds.__setitem__(n, seconds[n] + time.perf_counter() - s.pop())))
    try:
        started = time.perf_counter()
        model.detect(pixels, ids)
        seconds["total"] = time.perf_counter() - started
    finally:
        for handle in handles:
            handle.remove()
    return seconds


def prompt_path(model, pixels, phrases: list[str]) -> None:
    """The prompt-dependent boxes on a cached image: one phrase alone, then all phrases in one batch."""
    from conceptseg import tokenize

    encoding = model.encode_image(pixels)
    single = timed_forward(model, encoding, tokenize(phrases[:1]))
    batched = timed_forward(model, encoding, tokenize(phrases))
    print(f"\nPrompt path on a cached image: 1 phrase, then {len(phrases)} phrases in one batch (seconds per phrase)")
    print("| box | 1 phrase | batched, per phrase | ratio |")
    print("|---|---|---|---|")
    for name in [*BOXES, "total"]:
        if name in single and not name.startswith(("ViT", "detector neck")):
            per_phrase = batched[name] / len(phrases)
            print(f"| {name} | {single[name]:.3f} | {per_phrase:.3f} | {per_phrase / max(single[name], 1e-9):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ops", type=int, default=15, help="ViT operators listed")
    parser.add_argument("--phrases", type=int, default=0, metavar="N",
                        help="also time the prompt path with N phrases batched against one phrase")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from conceptseg import SAM3, tokenize
    from conceptseg.model.configs import SAM3Config

    torch.manual_seed(0)
    config = SAM3Config()
    model = SAM3(config).eval()
    pixels = torch.randn(1, 3, config.vit.image_size, config.vit.image_size)
    ids = tokenize(["a yellow school bus"])
    vit = config.vit
    tokens = vit.grid_size ** 2
    with torch.inference_mode():
        rate = gemm_rate(tokens, vit.width, vit.mlp_dim)
        fusion_attention_rate = attention_rate(config.num_heads, tokens, config.d_model // config.num_heads)
        flops_mode = FlopCounterMode(display=False, custom_mapping={
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention_flops,
            torch.ops.aten._scaled_dot_product_attention_math: attention_flops,
        })
        with flops_mode:
            model.detect(pixels, ids)  # also the warm-up
        counts = flops_mode.get_flop_counts()
        seconds = timed_forward(model, pixels, ids)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            model.encode_trunk(pixels)
    print(f"threads {args.threads}, image {vit.image_size}px ({tokens} tokens), random full-size weights")
    print(f"plain fp32 GEMM [{tokens}x{vit.width}]x[{vit.width}x{vit.mlp_dim}]: {rate:.0f} GFLOP/s")
    print("| box | time s | share | GFLOP | GFLOP/s | GEMM-rate floor s | time / floor |")
    print("|---|---|---|---|---|---|---|")
    for name, (_, key) in BOXES.items():
        flops = sum(counts.get(key, {}).values()) / 1e9
        took = seconds.get(name, 0.0)
        floor = flops / rate
        print(f"| {name} | {took:.2f} | {took / seconds['total']:.1%} | {flops:.1f} | "
              f"{flops / took if took else 0:.0f} | {floor:.2f} | {took / floor if floor else float('nan'):.2f} |")
    rest = seconds["total"] - sum(seconds.get(name, 0.0) for name in BOXES)
    total_flops = sum(counts.get("Global", {}).values()) / 1e9
    print(f"| other (glue, position encoding, box head, the fusion encoder's image-only step) | {rest:.2f} | {rest / seconds['total']:.1%} | | | | |")
    print(f"| **total** | {seconds['total']:.2f} | | {total_flops:.1f} | {total_flops / seconds['total']:.0f} | "
          f"{total_flops / rate:.2f} | {seconds['total'] * rate / total_flops:.2f} |")
    attention_ops = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_attention_math")
    print(f"\nplain self-attention [1, {config.num_heads} heads, {tokens} tokens, {config.d_model // config.num_heads}] "
          f"(the fusion encoder's): {fusion_attention_rate:.0f} GFLOP/s. Floors with attention at that rate and "
          "the rest at the GEMM rate:")
    for name in ("fusion encoder", "decoder", "segmentation head"):
        ops = counts.get(BOXES[name][1], {})
        attention = sum(flops for op, flops in ops.items() if any(a in str(op) for a in attention_ops)) / 1e9
        other = sum(ops.values()) / 1e9 - attention
        floor = attention / fusion_attention_rate + other / rate
        print(f"  {name}: {attention:.1f} GFLOP attention + {other:.1f} GFLOP other -> floor {floor:.2f} s, "
              f"took {seconds.get(name, 0.0):.2f} s ({seconds.get(name, 0.0) / floor:.2f}x)")
    print("\nViT trunk operators by self time (one encode_trunk under the profiler):")
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops, max_name_column_width=50))
    if args.phrases:
        phrases = [f"{colour} {shape}" for shape in ("car", "bus", "dog", "cup")
                   for colour in ("red", "blue", "green", "yellow", "striped")][:args.phrases]
        with torch.inference_mode():
            prompt_path(model, pixels, phrases)


if __name__ == "__main__":
    main()
