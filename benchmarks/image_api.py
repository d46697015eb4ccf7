"""Image API timings: first call, cached re-prompt, many phrases in one batched pass, peak RSS.

    python benchmarks/image_api.py                  # random full-size SAM 3 weights, 1008 px
    python benchmarks/image_api.py --model embedded # the embedded model shipped in the package
    python benchmarks/image_api.py --model PATH     # any checkpoint

Also: 10 phrases in one predict_many against 10 separate calls on the cached image, and a fresh image with 1 and
with 10 phrases (text encodings cached in all three, so that they compare detection alone).
The script also counts the floating-point operations of each part on a meta-device copy of the model (no
memory, no time): the ratio of prompt FLOPs to image FLOPs is what exact computation cannot go below, since
every image token of the fusion encoder and the pixel decoder is conditioned on the prompt.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from conceptseg import SAM3, ImagePredictor, SAM3Config, load_model, tokenize
from conceptseg.model.detector import GeometryPrompt, TextEncoding

PHRASES = ["red circle", "blue star", "large green ring", "striped square", "yellow heart", "small crosses",
           "dotted hexagon", "purple triangles", "orange star", "cyan ring"]


def timed(function, repeats: int) -> float:
    """Median wall time in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def flop_counts(config: SAM3Config, phrase_counts: tuple[int, ...]) -> tuple[float, list[float]]:
    """GFLOPs of encoding one image and of each count of text prompts on it, counted on the meta device (as
    `ImagePredictor` runs them: the fusion encoder's image-only step once per image)."""
    with torch.device("meta"):
        model = SAM3(config).eval()
        pixel_values = torch.zeros(1, 3, config.vit.image_size, config.vit.image_size)
    with FlopCounterMode(display=False) as image_counter:  # the image-only step of the fusion encoder included
        encoding = model.detector.attend_image(model.encode_image(pixel_values))
    prompt_flops = []
    for count in phrase_counts:
        input_ids = tokenize(PHRASES[:count]).to("meta")
        with FlopCounterMode(display=False) as prompt_counter:
            text = TextEncoding(*model.detector.text_encoder(input_ids))
            images = encoding.select(torch.zeros(count, dtype=torch.long))
            model.detector(images, text, GeometryPrompt(None, None, None, None))
        prompt_flops.append(prompt_counter.get_total_flops() / 1e9)
    return image_counter.get_total_flops() / 1e9, prompt_flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="'embedded', a checkpoint path, or omit for random full size")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model is None:
        model, name = SAM3(SAM3Config()).eval(), "random full-size SAM 3"
    else:
        model, name = load_model(None if args.model == "embedded" else args.model), args.model
    predictor = ImagePredictor(model)
    image = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)

    print(f"{name}, {model.config.vit.image_size} px input, 640x480 image, {args.threads} threads, "
          f"torch {torch.__version__}", flush=True)
    start = time.perf_counter()
    predictor.set_image(image)
    predictor.predict(text=PHRASES[0])
    first = time.perf_counter() - start
    print(f"first call (encode image + text + detect): {first:8.3f} s", flush=True)
    reprompt = timed(lambda: predictor.predict(text=PHRASES[1], boxes=[[100, 100, 200, 220]]), args.repeats)
    print(f"re-prompt on cached image (text + box):    {reprompt:8.3f} s  ({100 * reprompt / first:.1f}% of first)",
          flush=True)
    one = timed(lambda: predictor.predict_many(PHRASES[:1]), args.repeats)
    print(f"predict_many, 1 phrase:                    {one:8.3f} s", flush=True)
    predictor.predict_many(PHRASES)  # every phrase's text encoding cached: the comparisons below are detection alone
    ten_times, separate_times = [], []
    for _ in range(args.repeats):  # interleaved: this machine's speed drifts by 10-25% over minutes
        ten_times.append(timed(lambda: predictor.predict_many(PHRASES), 1))
        separate_times.append(timed(lambda: [predictor.predict(text=phrase) for phrase in PHRASES], 1))
    ten, separate = statistics.median(ten_times), statistics.median(separate_times)
    print(f"predict_many, 10 phrases:                  {ten:8.3f} s  ({ten / one:.2f}x one phrase)", flush=True)
    print(f"10 separate predict calls:                 {separate:8.3f} s  (predict_many takes {ten / separate:.2f}x)",
          flush=True)
    fresh_one = timed(lambda: (predictor.set_image(image), predictor.predict_many(PHRASES[:1])), args.repeats)
    fresh_ten = timed(lambda: (predictor.set_image(image), predictor.predict_many(PHRASES)), args.repeats)
    print(f"fresh image + 1 phrase / + 10 phrases:     {fresh_one:8.3f} s / {fresh_ten:.3f} s  "
          f"({fresh_ten / fresh_one:.2f}x)", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS: {peak:.2f} GiB")
    image_flops, (one_flops, ten_flops) = flop_counts(model.config, (1, 10))
    print(f"GFLOPs: image encoder {image_flops:.0f}, one text prompt {one_flops:.1f} "
          f"({100 * one_flops / (image_flops + one_flops):.1f}% of a first call), 10 prompts {ten_flops:.1f} "
          f"({ten_flops / one_flops:.2f}x one)")


if __name__ == "__main__":
    main()
