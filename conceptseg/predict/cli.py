"""`conceptseg predict` (images or folders -> COCO json + overlays) and `conceptseg demo`."""

from __future__ import annotations

import argparse
import glob
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
from tqdm import tqdm

from ..cli import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


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
    predict.add_argument("--out", type=Path, default=Path("conceptseg_predictions"), help="output directory")
    predict.add_argument("--save-masks", action="store_true", help="also write one PNG per instance mask")
    predict.set_defaults(func=run_predict)

    demo = subparsers.add_parser("demo", help="run the embedded model on a generated example image")
    demo.add_argument("--out", type=Path, default=Path("conceptseg_demo"), help="output directory")
    demo.add_argument("--seed", type=int, default=7, help="which generated scene to use")
    demo.set_defaults(func=run_demo)


def parse_prompt(value: str, size: int, flag: str) -> tuple[list[float], int]:
    """'x1,y1,x2,y2[,neg]' -> (coordinates, label)."""
    parts = [p.strip() for p in value.split(",")]
    label = 1
    if parts and parts[-1].lower() in ("neg", "pos"):
        label = 0 if parts.pop().lower() == "neg" else 1
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) != size:
        shape = "X1,Y1,X2,Y2" if size == 4 else "X,Y"
        raise UsageError(f"{flag} {value!r}: expected {shape} in pixels, optionally followed by ',neg'")
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


def run_predict(args: argparse.Namespace) -> int:
    boxes = [parse_prompt(v, 4, "--box") for v in args.box]
    points = [parse_prompt(v, 2, "--point") for v in args.point]
    if not args.text and not boxes and not points:
        raise UsageError("give at least one --text, --box or --point")
    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must lie in [0, 1], got {args.threshold}")
    if args.exemplar_image and not (boxes or points):
        raise UsageError("--exemplar-image needs the --box or --point exemplars drawn on it")
    images = find_images(args.sources)
    from .. import load_model
    from .image import ImagePredictor
    from .results import draw_overlay

    predictor = ImagePredictor(load_model(args.model, device=args.device))
    geometry = {
        "boxes": [b for b, _ in boxes] or None, "box_labels": [label for _, label in boxes] or None,
        "points": [p for p, _ in points] or None, "point_labels": [label for _, label in points] or None,
    }
    if args.exemplar_image:
        geometry = {"exemplars": predictor.encode_exemplars(args.exemplar_image, **geometry)}
    args.out.mkdir(parents=True, exist_ok=True)
    texts = args.text or [None]
    records, failures, used_names = [], [], set()
    for image_id, path in enumerate(tqdm(images, desc="predict", unit="image", file=sys.stderr)):
        try:
            predictor.set_image(path)
        except ValueError as error:
            failures.append(f"{path}: {error}")
            continue
        results = predictor.predict_many(texts, threshold=args.threshold, **geometry)
        name = _unique_stem(path, used_names)
        for category_id, result in enumerate(results, start=1):
            for k, record in enumerate(result.to_coco(image_id, category_id)):
                records.append({**record, "file_name": str(path), "text": result.prompt["text"]})
                if args.save_masks:
                    mask_path = args.out / "masks" / f"{name}_{category_id}_{k}.png"
                    mask_path.parent.mkdir(exist_ok=True)
                    PIL.Image.fromarray(result.masks[k].astype(np.uint8) * 255).save(mask_path)
        PIL.Image.fromarray(draw_overlay(results[0].image, results)).save(args.out / f"{name}.png")
    (args.out / "predictions.json").write_text(json.dumps(records))
    print(f"{len(images) - len(failures)} images, {len(records)} instances -> {args.out / 'predictions.json'}")
    for failure in failures:
        print(f"skipped {failure}", file=sys.stderr)
    return 1 if failures else 0


def _unique_stem(path: Path, used: set[str]) -> str:
    name, n = path.stem, 1
    while name in used:
        n += 1
        name = f"{path.stem}_{n}"
    used.add(name)
    return name


def run_demo(args: argparse.Namespace) -> int:
    from .. import SAM3, load_model, tiny_config
    from ..data.synthetic import ConceptWorld
    from .image import ImagePredictor

    try:
        model = load_model()
    except FileNotFoundError as error:
        warnings.warn(f"{error}; the demo runs an untrained tiny model, so expect nonsense", stacklevel=1)
        model = SAM3(tiny_config())
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
    (args.out / "predictions.json").write_text(json.dumps(records))
    print(f'text prompt "{sample.phrase}": {len(by_text)} instances found ({len(sample.masks)} in the scene)')
    print(f"exemplar box {sample.exemplar_boxes[0].round(1).tolist()}: {len(by_exemplar)} instances found")
    print(f"outputs written to {args.out.resolve()}/ (input.png, text_prompt.png, exemplar_prompt.png, "
          "predictions.json)")
    return 0
