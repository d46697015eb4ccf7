"""An SA-Co image GT file (or a plain COCO instance dataset) as a dataset of `Example`s, for training and for
evaluating a model in batches.

The file is read by `conceptseg.io` (`read_image_gt`, or `read_coco_pairs` when the entries carry no
`text_input`); images are read with the package's one image rule (`conceptseg.io.images.load_image`). With
`prompt="exemplar"` the pairs' `exemplar_boxes` become the prompt, with the text "visual".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conceptseg.data.examples import Example
from conceptseg.io.coco import read_coco_pairs
from conceptseg.io.images import load_image
from conceptseg.io.records import PathLike, load_json, require_keys
from conceptseg.io.rle import decode_mask
from conceptseg.io.saco_image import ImagePair, read_image_gt
from conceptseg.model.tokenizer import EXEMPLAR_TEXT

PROMPTS = ("text", "exemplar")


def xywh_to_xyxy(boxes: list[list[float]]) -> np.ndarray:
    """[x, y, w, h] pixel boxes -> float32 [N, 4] XYXY."""
    xywh = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


class SacoDataset:
    """Examples of an SA-Co (or COCO) GT file whose `file_name`s are relative to `image_dir`.

    Instances with an empty box are dropped (they have no extent to regress to).
    """

    def __init__(self, gt_path: PathLike, image_dir: PathLike, prompt: str = "text") -> None:
        if prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
        data = require_keys(load_json(gt_path), ("images", "annotations"), str(gt_path))
        is_saco = all(isinstance(record, dict) and "text_input" in record for record in data["images"])
        pairs = read_image_gt(gt_path, data) if is_saco else read_coco_pairs(gt_path, data)
        self.pairs: list[ImagePair] = list(pairs.values())
        if prompt == "exemplar" and any(not pair.exemplar_boxes for pair in self.pairs):
            raise ValueError(f"{gt_path}: prompt='exemplar' needs 'exemplar_boxes' on every images entry")
        self.image_dir = Path(image_dir)
        self.prompt = prompt

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Example:
        pair = self.pairs[index]
        path = self.image_dir / pair.file_name
        if not path.is_file():
            raise FileNotFoundError(f"image {path} of pair {pair.id} not found; check the image directory")
        image = load_image(path)
        if image.shape[:2] != (pair.height, pair.width):
            raise ValueError(f"{path} is {image.shape[1]}x{image.shape[0]}, the GT says {pair.width}x{pair.height}")
        boxes = xywh_to_xyxy([instance.box for instance in pair.instances])
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        masks = [decode_mask(instance.mask, pair.height, pair.width)
                 for instance, kept in zip(pair.instances, keep) if kept]
        masks = np.stack(masks) if masks else np.zeros((0, pair.height, pair.width), dtype=bool)
        if self.prompt == "exemplar":
            return Example(image, EXEMPLAR_TEXT, masks, boxes[keep], xywh_to_xyxy(pair.exemplar_boxes),
                           np.asarray(pair.exemplar_labels, dtype=bool))
        return Example(image, pair.text_input, masks, boxes[keep])
