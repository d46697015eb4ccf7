"""Generation speed of the synthetic concept world on one core.

    python benchmarks/synthetic_speed.py [--samples 500] [--sizes 224 128]

Reports wall-clock and CPU milliseconds per image sample and per video frame (best of three runs, so that
other processes on a shared machine distort the figure less). Target: <= 5 ms per 224x224 sample.
"""

import argparse
import time
from functools import partial

from conceptseg.data.synthetic import ConceptWorld


def best_of_three(generate, count: int) -> tuple[float, float]:
    """Lowest (wall ms, CPU ms) per item over three runs of `count` items."""
    runs = []
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        for index in range(count):
            generate(index)
        runs.append(((time.perf_counter() - wall) * 1e3 / count, (time.process_time() - cpu) * 1e3 / count))
    return min(run[0] for run in runs), min(run[1] for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    parser.add_argument("--frames", type=int, default=12)
    args = parser.parse_args()
    for size in args.sizes:
        world = ConceptWorld(size=size, split="train", seed=0)
        world.sample(0)
        wall, cpu = best_of_three(world.sample, args.samples)
        print(f"{size}x{size} text sample:     {wall:6.2f} ms wall  {cpu:6.2f} ms CPU")
        wall, cpu = best_of_three(world.exemplar_sample, args.samples)
        print(f"{size}x{size} exemplar sample: {wall:6.2f} ms wall  {cpu:6.2f} ms CPU")
        clips = max(args.samples // (4 * args.frames), 2)
        wall, cpu = best_of_three(partial(world.video, num_frames=args.frames), clips)
        wall, cpu = wall / args.frames, cpu / args.frames
        print(f"{size}x{size} video frame:     {wall:6.2f} ms wall  {cpu:6.2f} ms CPU"
              f"  ({args.frames}-frame clips)")


if __name__ == "__main__":
    main()
