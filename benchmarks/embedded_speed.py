"""End-to-end ImagePredictor throughput of the embedded model (target: >= 5 images/s on 2 CPU cores).

    python benchmarks/embedded_speed.py [--images 50] [--threads 2]

Each image goes through set_image (load, preprocess, backbone) and one text predict (with post-processing to
the original 224x224 size), as a user's loop would.
"""

from __future__ import annotations

import argparse
import time

import torch

from conceptseg import ImagePredictor, load_model
from conceptseg.data import ConceptWorld


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = ConceptWorld(size=224, split="test", seed=123)
    samples = [world.sample(i) for i in range(args.images + 5)]
    predictor = ImagePredictor(load_model())
    for sample in samples[:5]:  # warm-up
        predictor.set_image(sample.image)
        predictor.predict(text=sample.phrase)
    start = time.perf_counter()
    found = 0
    for sample in samples[5:]:
        predictor.set_image(sample.image)
        found += len(predictor.predict(text=sample.phrase))
    elapsed = time.perf_counter() - start
    print(f"{args.images} images in {elapsed:.2f} s: {args.images / elapsed:.1f} images/s "
          f"({args.threads} threads, torch {torch.__version__}; {found} instances found)")


if __name__ == "__main__":
    main()
