"""COCO run-length encoding: the one place masks are encoded to and decoded from JSON.

Written RLE is always compressed with `counts` a str. Read segmentations may be compressed RLE (str or bytes
counts), uncompressed RLE (a list of run lengths, as some VEval files hold) or polygons (plain COCO).
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode_mask(mask: np.ndarray) -> dict:
    """Binary mask [H, W] -> compressed COCO RLE {"size": [H, W], "counts": str}, ready for JSON."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(size) for size in rle["size"]], "counts": rle["counts"].decode("ascii")}


def compress(segmentation: object, height: int, width: int) -> dict:
    """Any COCO segmentation of a height x width image -> compressed RLE with str counts."""
    if isinstance(segmentation, list):  # polygons: one list of x, y coordinates per part
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
        rle = segmentation
    else:
        raise ValueError(f"unsupported segmentation {str(segmentation)[:80]}: expected COCO RLE or polygons")
    counts = rle["counts"]
    return {"size": [int(size) for size in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def decode_mask(segmentation: object, height: int, width: int) -> np.ndarray:
    """Any COCO segmentation of a height x width image -> bool mask [height, width]."""
    rle = compress(segmentation, height, width)
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)
