"""Time SA-Co image scoring: N image-phrase pairs with M GT masks and M predicted masks each.

    python benchmarks/eval_speed.py                 # 10,000 pairs x 10 masks
    python benchmarks/eval_speed.py --gt-sets 3     # Gold-style oracle over three GT files

Masks are random star-shaped polygons rasterised to COCO RLE (about as long as real SAM masks); predictions
jitter the GT polygons. The timed part is `conceptseg.eval.evaluate` on the files: JSON reading,
validation, mask and box matching, and the metrics.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from conceptseg.eval import evaluate


def star_polygon(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """[V, 2] vertices (x, y) of a random star-shaped polygon."""
    vertices = int(rng.integers(12, 40))
    centre = rng.uniform([0.1 * width, 0.1 * height], [0.9 * width, 0.9 * height])
    radius = rng.uniform(10, min(height, width) / 6) * rng.uniform(0.6, 1.0, vertices)
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    points = centre + radius[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.clip(points, 0, [width - 1, height - 1])


def polygon_rle(points: np.ndarray, height: int, width: int) -> dict:
    rle = mask_utils.merge(mask_utils.frPyObjects([points.ravel().tolist()], height, width))
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def make_files(directory: Path, pairs: int, masks: int, gt_sets: int, height: int, width: int, seed: int):
    rng = np.random.default_rng(seed)
    images, predictions = [], []
    annotations = [[] for _ in range(gt_sets)]
    for pair_id in range(pairs):
        images.append({"id": pair_id, "file_name": f"{pair_id // 4}.jpg", "text_input": f"phrase {pair_id % 4}",
                       "height": height, "width": width, "is_instance_exhaustive": 1, "is_pixel_exhaustive": 1})
        for _ in range(masks):
            polygon = star_polygon(rng, height, width)
            for index in range(gt_sets):
                rle = polygon_rle(polygon + rng.normal(0, index, polygon.shape), height, width)
                x, y, w, h = mask_utils.toBbox(rle)
                annotations[index].append({
                    "id": len(annotations[index]) + 1, "image_id": pair_id, "category_id": 1, "iscrowd": 0,
                    "bbox": [x / width, y / height, w / width, h / height], "segmentation": rle,
                    "area": float(mask_utils.area(rle)) / (height * width),
                })
            rle = polygon_rle(polygon + rng.normal(0, 3, polygon.shape), height, width)
            predictions.append({"image_id": pair_id, "category_id": 1, "segmentation": rle,
                                "bbox": mask_utils.toBbox(rle).tolist(), "score": float(rng.uniform(0.3, 1))})
    gt_files = []
    for index in range(gt_sets):
        gt_files.append(directory / f"gt_{index}.json")
        document = {"images": images, "annotations": annotations[index], "categories": [{"id": 1, "name": "x"}]}
        gt_files[-1].write_text(json.dumps(document))
    pred_file = directory / "pred.json"
    pred_file.write_text(json.dumps(predictions))
    return gt_files, pred_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--masks", type=int, default=10, help="GT masks and predicted masks per pair")
    parser.add_argument("--gt-sets", type=int, default=1)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        gt_files, pred_file = make_files(Path(directory), args.pairs, args.masks, args.gt_sets, *args.size, args.seed)
        megabytes = sum(path.stat().st_size for path in [*gt_files, pred_file]) / 1e6
        print(f"generated {args.pairs} pairs x {args.masks} masks ({megabytes:.0f} MB) in "
              f"{time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        results = evaluate(gt_files, pred_file)
        elapsed = time.perf_counter() - start
    print(f"evaluate (mask + box, {args.gt_sets} GT set(s)): {elapsed:.1f} s   "
          f"pmF1 {results['pmF1']:.3f}  box_pmF1 {results['box_pmF1']:.3f}")


if __name__ == "__main__":
    main()
