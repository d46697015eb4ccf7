"""`conceptseg predict` (images or folders -> COCO json + overlays) and `conceptseg demo`."""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image
from tqdm import tqdm

from conceptseg.cli import UsageError, add_quantize_argument
from conceptseg.io.atomic import write_text_atomic
from conceptseg.io.images import IMAGE_SUFFIXES, ImageLimits, load_image

if TYPE_CHECKING:
    from conceptseg.predict.image import ImagePredictor

# predictions.json is rewritten (atomically) after an image once this many seconds have passed since the last
# write: a rewrite costs the whole file, so rewriting after every image would be quadratic in a long run, while
# this bounds both the overhead and the work a killed run loses.
CHECKPOINT_SECONDS = 10.0


def register(subparsers: argparse._SubParsersAction) -> None:
    predict = subparsers.add_parser("predict", help="segment every instance of a concept in images")
    predict.add_argument("sources", nargs="+", metavar="SOURCE", help="image files, directories or globs")
    predict.add_argument("--text", action="append", default=[], help="noun phrase (repeat for several)")
    predict.add_argument("--box", action="append", default=[], metavar="X1,Y1,X2,Y2[,neg]",
                         help="exemplar box in pixels (repeat; add ',neg' for a negative exemplar)")
    predict.add_argument("--point", action="append", default=[], metavar="X,Y[,neg]",
                         help="exemplar point in pixels (repeat; add ',neg' for a negative one)")
    predict.add_argument("--exemplar-image", type=Path, metavar="IMAGE",
                         help="the --box/--point exemplars are drawn on this image, not on each source: find their "
                              "like in every source (experimental: not a mode SAM 3 was trained for)")
    predict.add_argument("--model", default=None, help="checkpoint path or hub id (default: the embedded model)")
    predict.add_argument("--threshold", type=float, default=0.5, help="score threshold (default 0.5)")
    predict.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_quantize_argument(predict)
    predict.add_argument("--out", type=Path, default=Path("conceptseg_predictions"), help="output directory")
    predict.add_argument("--save-masks", action="store_true", help="also write one PNG per instance mask")
    limits = ImageLimits()  # the defaults shown; only the options given are passed on (see `image_limits`)
    predict.add_argument("--max-image-pixels", type=int, metavar="N",
                         help=f"skip images of more than N pixels, width x height (default {limits.max_pixels:,}: "
                              "PIL's decompression-bomb threshold; 0: no limit, though PIL itself still refuses "
                              "images over twice its threshold)")
    predict.add_argument("--max-image-side", type=int, metavar="N",
                         help="skip images whose longer side exceeds N pixels (default: "
                              f"{limits.max_side or 'no limit'})")
    predict.add_argument("--max-image-bytes", type=int, metavar="N",
                         help=f"skip image files over N bytes (default: {limits.max_bytes or 'no limit'})")
    predict.set_defaults(func=run_predict)

    demo = subparsers.add_parser("demo", help="run the embedded model on a generated example image (or video)")
    demo.add_argument("--out", type=Path, default=Path("conceptseg_demo"), help="output directory")
    demo.add_argument("--seed", type=int, default=7, help="which generated scene to use")
    demo.add_argument("--video", action="store_true",
                      help="track a phrase through a generated clip: overlay.mp4 + results.json (needs PyAV)")
    demo.add_argument("--frames", type=int, default=48, help="length of the --video clip (default 48)")
    demo.set_defaults(func=run_demo)


def parse_prompt(value: str, size: int, flag: str, shape: str | None = None) -> tuple[list[float], int]:
    """'a,b,...[,neg]' with `size` numbers -> (numbers, label 1 or 0); `shape` names them in the error
    (default: a box or a point in pixels)."""
    parts = [p.strip() for p in value.split(",")]
    label = 1
    if parts and parts[-1].lower() in ("neg", "pos"):
        label = 0 if parts.pop().lower() == "neg" else 1
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) != size:
        shape = shape or ("X1,Y1,X2,Y2 in pixels" if size == 4 else "X,Y in pixels")
        raise UsageError(f"{flag} {value!r}: expected {shape}, optionally followed by ',neg'")
    return numbers, label


def find_images(sources: list[str]) -> list[Path]:
    """Expand files, directories (their image files, sorted) and glob patterns."""
    found: list[Path] = []
    for source in sources:
        matches = [Path(m) for m in sorted(glob.glob(source))] if glob.has_magic(source) else [Path(source)]
        if not matches:
            raise UsageError(f"no files match {source!r}")
        for path in matches:
            if path.is_dir():
                found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
            elif path.exists():
                found.append(path)
            else:
                raise UsageError(f"{str(path)!r} does not exist")
    if not found:
        raise UsageError("no images found in the given sources")
    return found


def image_limits(args: argparse.Namespace) -> ImageLimits:
    """The --max-image-* limits the user set (0 switches one off); ImageLimits' defaults for the others."""
    given = {}
    for field in ("max_pixels", "max_side", "max_bytes"):
        flag = field.replace("max_", "max_image_")
        value = getattr(args, flag)
        if value is None:
            continue
        if value < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 0 (0: no limit), got {value}")
        given[field] = value or None
    return ImageLimits(**given)


def run_predict(args: argparse.Namespace) -> int:
    boxes = [parse_prompt(v, 4, "--box") for v in args.box]
    points = [parse_prompt(v, 2, "--point") for v in args.point]
    if not args.text and not boxes and not points:
        raise UsageError("give at least one --text, --box or --point")
    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must lie in [0, 1], got {args.threshold}")
    if args.exemplar_image and not (boxes or points):
        raise UsageError("--exemplar-image needs the --box or --point exemplars drawn on it")
    limits = image_limits(args)
    images = find_images(args.sources)
    exemplar_image = load_image(args.exemplar_image, limits) if args.exemplar_image else None
    from conceptseg import load_model
    from conceptseg.predict.image import ImagePredictor

    predictor = ImagePredictor(load_model(args.model, device=args.device, quantize=args.quantize))
    geometry = {
        "boxes": [b for b, _ in boxes] or None, "box_labels": [label for _, label in boxes] or None,
        "points": [p for p, _ in points] or None, "point_labels": [label for _, label in points] or None,
    }
    if exemplar_image is not None:
        geometry = {"exemplars": predictor.encode_exemplars(exemplar_image, **geometry)}
    prompts = {"texts": args.text or [None], "threshold": args.threshold, **geometry}  # for predict_many
    args.out.mkdir(parents=True, exist_ok=True)
    output = args.out / "predictions.json"
    records: list[str] = []  # JSON-encoded already, so that a checkpoint only joins strings
    skipped, used_names = 0, set()
    write_records(output, records)  # at once: an earlier run's file must not pass for this run's
    last_write = time.monotonic()
    try:
        for image_id, path in enumerate(tqdm(images, desc="predict", unit="image", file=sys.stderr)):
            try:
                found = _predict_file(predictor, path, image_id, prompts, limits, args, used_names)
            except Exception as error:  # whatever fails on one file (reading, limits, the model) skips that file
                skipped += 1
                reason = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
                tqdm.write(f"skipped {path}: {reason}", file=sys.stderr)
                continue
            records.extend(json.dumps(record) for record in found)
            if time.monotonic() - last_write >= CHECKPOINT_SECONDS:
                write_records(output, records)
                last_write = time.monotonic()
    finally:  # also when interrupted (Ctrl-C): the images done so far are kept
        write_records(output, records)
    print(f"{len(images) - skipped} images, {len(records)} instances -> {output}"
          + (f" ({skipped} skipped)" if skipped else ""))
    return 1 if skipped else 0


def _predict_file(
    predictor: ImagePredictor, path: Path, image_id: int, prompts: dict, limits: ImageLimits, args: argparse.Namespace,
    used_names: set[str],
) -> list[dict]:
    """Predict on one source and write its overlay (and masks); returns its COCO records."""
    from conceptseg.predict.results import draw_overlay

    predictor.set_image(load_image(path, limits))
    results = predictor.predict_many(**prompts)
    name = _unique_stem(path, used_names)
    records = []
    for category_id, result in enumerate(results, start=1):
        for k, record in enumerate(result.to_coco(image_id, category_id)):
            records.append({**record, "file_name": str(path), "text": result.prompt["text"]})
            if args.save_masks:
                mask_path = args.out / "masks" / f"{name}_{category_id}_{k}.png"
                mask_path.parent.mkdir(exist_ok=True)
                PIL.Image.fromarray(result.masks[k].astype(np.uint8) * 255).save(mask_path)
    PIL.Image.fromarray(draw_overlay(results[0].image, results)).save(args.out / f"{name}.png")
    return records


def write_records(path: Path, records: list[str]) -> None:
    """Replace `path` by the JSON list of the already encoded `records`, atomically: a reader, or a run killed at
    any moment, finds the previous complete file or the new one, never a partial one."""
    write_text_atomic(path, "[" + ", ".join(records) + "]")


def _unique_stem(path: Path, used: set[str]) -> str:
    name, n = path.stem, 1
    while name in used:
        n += 1
        name = f"{path.stem}_{n}"
    used.add(name)
    return name


def demo_model():
    """The embedded model, or an untrained tiny one (with a warning) where it is not installed."""
    import dataclasses

    from conceptseg import SAM3, load_model, tiny_config

    try:
        return load_model()
    except FileNotFoundError as error:
        warnings.warn(f"{error}; the demo runs an untrained tiny model, so expect nonsense", stacklevel=2)
        return SAM3(dataclasses.replace(tiny_config(), d_model=64))  # the tracker (--video) needs a width >= 64


def run_demo(args: argparse.Namespace) -> int:
    if args.video:
        from conceptseg.predict.demo_video import run_video_demo

        return run_video_demo(args, demo_model)
    from conceptseg.data.synthetic import ConceptWorld
    from conceptseg.predict.image import ImagePredictor

    model = demo_model()
    sample = ConceptWorld(size=256, split="test", seed=args.seed).exemplar_sample(0)
    predictor = ImagePredictor(model)
    predictor.set_image(sample.image)
    by_text = predictor.predict(text=sample.phrase)
    by_exemplar = predictor.predict(boxes=sample.exemplar_boxes[:1])
    args.out.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(sample.image).save(args.out / "input.png")
    by_text.save(args.out / "text_prompt.png")
    by_exemplar.save(args.out / "exemplar_prompt.png")
    records = by_text.to_coco(0, 1) + by_exemplar.to_coco(0, 2)
    write_records(args.out / "predictions.json", [json.dumps(record) for record in records])
    print(f'text prompt "{sample.phrase}": {len(by_text)} instances found ({len(sample.masks)} in the scene)')
    print(f"exemplar box {sample.exemplar_boxes[0].round(1).tolist()}: {len(by_exemplar)} instances found")
    print(f"outputs written to {args.out.resolve()}/ (input.png, text_prompt.png, exemplar_prompt.png, "
          "predictions.json)")
    return 0
