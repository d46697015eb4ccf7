"""`conceptseg label` throughput and driver memory with the embedded model.

    python benchmarks/label_throughput.py [--images 200] [--concepts 3] [--threads 2] [--skip-ray]
    python benchmarks/label_throughput.py --memory 2000      # driver RSS over a 2,000-image local run

Throughput (`--images` concept-world scenes at 224 px, `--concepts` phrases each), printed as images/s:
1. baseline: one process, `ImagePredictor.set_image` + `predict_many(concepts)` per image, nothing written;
2. local engine (`label(engine="local")`, `--threads` torch threads): read in a thread, model, RLE, shards;
3. Ray with 2 workers on a local cluster started here (loopback), each worker 1 CPU and 1 torch thread; the
   cluster start is timed apart, and the first item's arrival tells the workers' start-up from the steady rate.
Memory (`--memory N`): a local run over N scenes while a thread samples the process's RSS; printed at every
10% of the items (flat: rows are streamed to shards, never held).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

CONCEPT_POOL = ("circle", "triangle", "red square", "blue hexagon", "star")


def make_images(folder: Path, count: int) -> None:
    import PIL.Image

    from conceptseg.data.synthetic import ConceptWorld

    world = ConceptWorld(size=224, split="test", seed=2029)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        PIL.Image.fromarray(world.sample(index).image).save(folder / f"{index:05d}.png")


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) / 1024


def baseline(folder: Path, concepts: list[str], threads: int) -> float:
    import torch

    from conceptseg import ImagePredictor, load_model

    torch.set_num_threads(threads)
    predictor = ImagePredictor(load_model())
    paths = sorted(folder.iterdir())
    started = time.perf_counter()
    for path in paths:
        predictor.set_image(path)
        predictor.predict_many(concepts)
    return len(paths) / (time.perf_counter() - started)


def run_engine(folder: Path, concepts: list[str], engine: str, threads: int) -> dict:
    """One `label` run into a scratch folder; its manifest's timings and instance count."""
    from conceptseg.label import LabelSettings, RayOptions, label

    with tempfile.TemporaryDirectory() as out:
        label([str(folder)], concepts, Path(out) / "labels", engine=engine, progress=False,
              settings=LabelSettings(threads=threads), ray_options=RayOptions(workers=2, worker_cpus=1.0))
        manifest = json.loads((Path(out) / "labels" / "manifest.json").read_text())
    return {**manifest["timings"], "instances": manifest["counts"]["instances"]}


def memory(count: int, concepts: list[str], threads: int) -> None:
    from conceptseg.label import LabelSettings, label

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"
        make_images(folder, count)
        samples: list[tuple[int, float]] = []
        done = threading.Event()
        out = Path(scratch) / "labels"

        def sample():
            while not done.is_set():
                finished = sum(1 for _ in (out / "items").glob("*.jsonl")) if (out / "items").exists() else 0
                samples.append((finished, rss_mib()))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        label([str(folder)], concepts, out, settings=LabelSettings(threads=threads), shard_size=100, progress=False)
        done.set()
        sampler.join()
        seconds = time.perf_counter() - started
    shards = -(-count // 100)
    print(f"{count} images x {len(concepts)} concepts, local engine, {threads} threads: {seconds:.0f} s "
          f"({count / seconds:.1f} images/s)")
    print("shards written | driver RSS MiB (max while that many shards were done)")
    for finished in range(0, shards + 1, max(1, shards // 10)):
        values = [rss for done_shards, rss in samples if done_shards == finished]
        if values:
            print(f"{finished:14d} | {max(values):.0f}")
    print(f"peak RSS {max(rss for _, rss in samples):.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--concepts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--memory", type=int, default=0, metavar="N", help="instead: driver RSS over N images")
    args = parser.parse_args()
    concepts = list(CONCEPT_POOL[:args.concepts])
    if args.memory:
        memory(args.memory, concepts, args.threads)
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"
        make_images(folder, args.images)
        print(f"{args.images} images x {len(concepts)} concepts ({', '.join(concepts)}), embedded model")
        print(f"baseline ImagePredictor loop, {args.threads} threads: {baseline(folder, concepts, args.threads):.1f} "
              "images/s (model loaded beforehand, nothing written)")
        local = run_engine(folder, concepts, "local", args.threads)
        print(f"local engine, {args.threads} threads: {local['items_per_second']:.1f} images/s end to end (first "
              f"item after {local['first_item_seconds']:.1f} s: model load; then "
              f"{local['steady_items_per_second']:.1f} images/s); {local['instances']} instances")
        if args.skip_ray:
            return
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=3, include_dashboard=False, _node_ip_address="127.0.0.1")
        cluster = time.perf_counter() - started
        try:
            distributed = run_engine(folder, concepts, "ray", 1)
        finally:
            ray.shutdown()
        print(f"ray, 2 workers x 1 thread: cluster start {cluster:.1f} s; {distributed['items_per_second']:.1f} "
              f"images/s end to end without it (first item after {distributed['first_item_seconds']:.1f} s: planning "
              f"and the workers' model loads; then {distributed['steady_items_per_second']:.1f} images/s); "
              f"{distributed['instances']} instances")


if __name__ == "__main__":
    main()
