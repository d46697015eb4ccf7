"""`conceptseg label`: label every instance of a list of concepts in folders, globs, manifests and videos.

    conceptseg label photos/ --concepts "red car,person" --out labels/
    conceptseg label manifest.csv --concepts-file concepts.txt --out labels/ --engine ray --address auto
"""

from __future__ import annotations

import argparse
from pathlib import Path

from conceptseg.cli import UsageError, add_quantize_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    from conceptseg.io.images import ImageLimits

    label = subparsers.add_parser(
        "label", help="batch-label image and video collections with concepts (resumable Parquet shards)",
        description="Label every instance of each concept in images and videos. Output: OUT/shards/*.parquet (one "
                    "row per item, concept and instance), errors.jsonl, manifest.json, and with --format coco|saco "
                    "a JSON dataset. Rerun the same command to resume after a crash: finished shards are kept.",
    )
    label.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="folders (recursive), globs, manifests (.csv/.jsonl with a 'path' and optional "
                            "'concepts' column), image or video files")
    concepts = label.add_mutually_exclusive_group(required=True)
    concepts.add_argument("--concepts", help='comma-separated phrases, e.g. "red car,person"')
    concepts.add_argument("--concepts-file", type=Path, help="one phrase per line")
    label.add_argument("--out", type=Path, required=True, help="output directory (a rerun resumes it)")
    label.add_argument("--model", default=None, help="checkpoint path or hub id (default: the embedded model)")
    label.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: in this process (default); ray: Ray Data (needs conceptseg[ray])")
    label.add_argument("--address", default=None,
                       help="Ray cluster to join: 'auto' or HOST:PORT (default: start a local one)")
    label.add_argument("--batch-size", type=int, default=4, help="items per model call (default 4)")
    label.add_argument("--workers", type=int, default=2, help="Ray: model workers, one model each (default 2)")
    label.add_argument("--worker-cpus", type=float, default=1.0,
                       help="Ray: CPUs per model worker, also its torch threads (default 1)")
    label.add_argument("--threshold", type=float, default=0.5, help="detection score threshold (default 0.5)")
    label.add_argument("--format", choices=("parquet", "saco", "coco"), default="parquet",
                       help="besides the Parquet shards, assemble a SA-Co or COCO JSON of the images (default: "
                            "shards only)")
    label.add_argument("--shard-size", type=int, default=None, help="items per output shard (default 256)")
    label.add_argument("--max-frames", type=int, default=None, metavar="N", help="label at most N frames per video")
    label.add_argument("--device", default="cpu", help="torch device (default cpu; cuda gives each Ray worker a GPU)")
    add_quantize_argument(label)
    label.add_argument("--threads", type=int, default=None,
                       help="torch threads per model (default: torch's choice locally, --worker-cpus on Ray)")
    limits = ImageLimits()
    label.add_argument("--max-image-pixels", type=int, metavar="N",
                       help=f"record images of more than N pixels as errors (default {limits.max_pixels:,}; 0: no "
                            "limit)")
    label.add_argument("--max-image-side", type=int, metavar="N", help="record images with a longer side as errors")
    label.add_argument("--max-image-bytes", type=int, metavar="N", help="record larger image files as errors")
    label.add_argument("--quiet", action="store_true", help="no progress bar")
    label.set_defaults(func=run_label)


def run_label(args: argparse.Namespace) -> int:
    from conceptseg.label.run import DEFAULT_SHARD_SIZE
    from conceptseg.label.sources import parse_concepts, read_concepts_file
    from conceptseg.predict.cli import image_limits

    concepts = read_concepts_file(args.concepts_file) if args.concepts_file else parse_concepts(args.concepts)
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.workers < 1 or args.worker_cpus <= 0:
        raise UsageError("--workers must be >= 1 and --worker-cpus > 0")
    if args.engine == "local" and args.address:
        raise UsageError("--address is for --engine ray")
    try:
        import pyarrow  # noqa: F401
    except ImportError as error:
        raise UsageError("conceptseg label writes Parquet: pip install pyarrow") from error
    from conceptseg.label import LabelSettings, RayOptions, label

    settings = LabelSettings(model=args.model, threshold=args.threshold, max_frames=args.max_frames,
                             limits=image_limits(args), quantize=args.quantize, device=args.device,
                             threads=args.threads)
    gpus = 1.0 if args.device.startswith("cuda") else 0.0
    ray_options = RayOptions(address=args.address, workers=args.workers, worker_cpus=args.worker_cpus,
                             worker_gpus=gpus)
    summary = label(args.sources, concepts, args.out, settings=settings, engine=args.engine,
                    batch_size=args.batch_size, shard_size=DEFAULT_SHARD_SIZE if args.shard_size is None else args.shard_size,
                    output_format=args.format, ray_options=ray_options, progress=not args.quiet)
    counts = summary.counts
    resumed = f", {summary.shards_skipped} of {summary.shards} shards kept from an earlier run" \
        if summary.shards_skipped else ""
    print(f"{counts['labelled']} of {counts['items']} items labelled, {counts['instances']} instances, "
          f"{counts['errors']} errors (errors.jsonl){resumed}; {summary.items_this_run} items in "
          f"{summary.seconds:.1f} s -> {summary.out.resolve()}/")
    return 0
