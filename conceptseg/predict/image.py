"""ImagePredictor: encode an image once, then prompt it many times (text, exemplar boxes, points, clicks).

Public coordinates are pixels of the original image: points (x, y) and boxes XYXY. Conversion to the model's
normalised frame happens here and nowhere else.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from conceptseg.io.images import ImageSource, load_image
from conceptseg.model.box_ops import (
    masks_to_boxes,
    normalized_cxcywh_to_pixel_xyxy,
    pixel_xyxy_to_normalized_cxcywh,
)
from conceptseg.model.detector import GeometryEncoding, ImageEncoding, TextEncoding
from conceptseg.model.sam3 import SAM3
from conceptseg.model.tokenizer import EXEMPLAR_TEXT, tokenize
from conceptseg.predict.results import Results
from conceptseg.predict.transforms import preprocess

MAX_PHRASES = 1000
TEXT_CACHE_SIZE = 256  # phrases whose encodings are kept (LRU); one is a few KB at full size


class ImagePredictor:
    """Promptable concept segmentation on images, with cached image and text encodings.

        predictor = ImagePredictor(load_model())
        predictor.set_image("street.jpg")
        cars = predictor.predict(text="red car")
        more = predictor.predict(text="red car", boxes=[[10, 20, 80, 60]])  # backbone not run again
    """

    def __init__(self, model: SAM3, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 mask_threshold: float | None = None, text_cache_size: int = TEXT_CACHE_SIZE):
        """mask_threshold: default sigmoid level for binarising masks (None: the one saved with the model,
        `model.mask_threshold`, 0.5 for SAM 3). text_cache_size: how many phrase encodings to keep (LRU)."""
        self.model = model.to(device=device, dtype=dtype).eval()
        self.mask_threshold = model.mask_threshold if mask_threshold is None else mask_threshold
        self._image: np.ndarray | None = None
        self._encoding: ImageEncoding | None = None
        self._tracker_levels: list[torch.Tensor] | None = None
        self._text_cache: OrderedDict[str, TextEncoding] = OrderedDict()
        self._text_cache_size = text_cache_size

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the current image."""
        if self._image is None:
            raise ValueError("no image set: call set_image(image) first")
        return self._image.shape[0], self._image.shape[1]

    @torch.inference_mode()
    def set_image(self, image: ImageSource) -> None:
        """Load and encode an image (path, PIL image or HxWx3 uint8 array); the encoding is cached."""
        self._image = load_image(image)
        self._encoding = self._encode_image(self._image)
        self._tracker_levels = None

    @torch.inference_mode()
    def encode_exemplars(
        self, image: ImageSource, boxes: Any = None, box_labels: Any = None, points: Any = None,
        point_labels: Any = None,
    ) -> GeometryEncoding:
        """Exemplar boxes and/or points drawn on `image` (in its pixels), encoded so that `predict(exemplars=...)`
        finds instances like them in other images. The current image stays set. Cross-image exemplars are not a
        mode of the official model; the embedded model was fine-tuned for them (see docs/embedded-model.md).
        """
        array = load_image(image)
        geometry = self._geometry(boxes, box_labels, points, point_labels, array.shape[:2])
        return self.model.encode_exemplars(self._encode_image(array), **geometry)

    def predict(
        self,
        text: str | None = None,
        boxes: Any = None,
        box_labels: Any = None,
        points: Any = None,
        point_labels: Any = None,
        threshold: float = 0.5,
        mask_threshold: float | None = None,
        exemplars: GeometryEncoding | None = None,
    ) -> Results:
        """Find every instance of a concept.

        text: a noun phrase; None with exemplars means exemplar-only. boxes: [K, 4] XYXY in original-image
        pixels, box_labels: [K] with 1 positive / 0 negative (default all positive); points: [P, 2] (x, y)
        pixels with point_labels likewise; or `exemplars` drawn on another image (`encode_exemplars`).
        Keeps instances with sigmoid(logit) * sigmoid(presence) >= threshold; masks are
        sigmoid(mask logit) > mask_threshold (None: the predictor's `mask_threshold`).
        """
        return self.predict_many([text], boxes, box_labels, points, point_labels, threshold, mask_threshold,
                                 exemplars)[0]

    @torch.inference_mode()
    def predict_many(
        self,
        texts: Sequence[str | None],
        boxes: Any = None,
        box_labels: Any = None,
        points: Any = None,
        point_labels: Any = None,
        threshold: float = 0.5,
        mask_threshold: float | None = None,
        exemplars: GeometryEncoding | None = None,
    ) -> list[Results]:
        """Several phrases on the current image in one batched decoder pass (shared exemplars, if any)."""
        encoding = self._require_image()
        phrases = self._phrases(texts, exemplars=boxes is not None or points is not None or exemplars is not None)
        height, width = self.image_size
        geometry = self._geometry(boxes, box_labels, points, point_labels, (height, width))
        outputs = self.model.detect(encoding, self._encode_texts(phrases), exemplars=exemplars, **geometry)
        if mask_threshold is None:
            mask_threshold = self.mask_threshold
        described = _describe(geometry, (height, width)) | ({"exemplars": "encoded"} if exemplars is not None else {})
        return [
            self._postprocess(outputs, i, self._image, {"text": text, **described}, threshold, mask_threshold)
            for i, text in enumerate(texts)
        ]

    @torch.inference_mode()
    def predict_instance(
        self,
        points: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = True,
    ) -> Results:
        """SAM 1-style segmentation of one object from clicks and/or a box (the tracker's decoder).

        points: [P, 2] (x, y) pixels, point_labels: [P] 1 positive / 0 negative; box: [4] XYXY pixels;
        mask_input: [1, 1, 4G, 4G] low-res logits of an earlier call (`results.low_res_logits[best][None, None]`).
        Returns K = 3 candidate masks (1 without `multimask`) with their predicted IoU as scores.
        """
        encoding = self._require_image()
        if "tracker" in self.model.missing_components:
            raise ValueError("this checkpoint carries no tracker weights; interactive segmentation needs them")
        if points is None and box is None and mask_input is None:
            raise ValueError("give at least one point, a box or a mask_input")
        if self._tracker_levels is None:
            self._tracker_levels = self.model.backbone.tracker_neck(encoding.trunk)
        height, width = self.image_size
        scale = self.model.config.vit.image_size / torch.tensor([width, height], dtype=torch.float32)
        coords, labels = _as_points(points, point_labels, (height, width))
        model_points = None if coords is None else (coords * scale)[None].to(self.model.device, self.model.dtype)
        model_box = None
        if box is not None:
            xyxy = _as_boxes([box], (height, width))
            model_box = (xyxy * scale.repeat(2)).to(self.model.device, self.model.dtype)
        point_labels_t = None if labels is None else labels[None].to(self.model.device)
        logits, iou, _ = self.model.tracker.predict_masks(
            self._tracker_levels, model_points, point_labels_t, model_box, mask_input, multimask
        )
        full = _upsample_logits(logits[0], (height, width)) > 0
        order = iou[0].float().argsort(descending=True)
        masks = full[order]
        return Results(
            masks=masks.cpu().numpy(), boxes=masks_to_boxes(masks).cpu().numpy().astype(np.float32),
            scores=iou[0, order].float().cpu().numpy(), prompt={"points": points, "box": box},
            image_size=(height, width), image=self._image, low_res_logits=logits[0, order].float().cpu(),
        )

    def _encode_image(self, image: np.ndarray) -> ImageEncoding:
        pixel_values = preprocess(image, self.model.config.vit.image_size)
        return self.model.encode_image(pixel_values.to(self.model.device, self.model.dtype))

    def _require_image(self) -> ImageEncoding:
        if self._encoding is None:
            raise ValueError("no image set: call set_image(image) first")
        return self._encoding

    @staticmethod
    def _phrases(texts: Sequence[str | None], exemplars: bool) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError("texts must be a list of phrases")
        if not texts:
            raise ValueError("no phrases given")
        if len(texts) > MAX_PHRASES:
            raise ValueError(f"{len(texts)} phrases in one call; at most {MAX_PHRASES} (split them into chunks)")
        phrases = []
        for text in texts:
            if text is None:
                if not exemplars:
                    raise ValueError("an empty prompt: give a text, exemplar boxes or points")
                text = EXEMPLAR_TEXT
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"text prompts must be non-empty strings, got {text!r}")
            phrases.append(text)
        return phrases

    def _encode_texts(self, phrases: list[str]) -> TextEncoding:
        known = {p: self._text_cache[p] for p in dict.fromkeys(phrases) if p in self._text_cache}
        new = [p for p in dict.fromkeys(phrases) if p not in known]
        if new:
            encoded = self.model.encode_text(tokenize(new, self.model.config.text.context_length))
            known |= {phrase: encoded.select(torch.tensor([i])) for i, phrase in enumerate(new)}
        for phrase in dict.fromkeys(phrases):  # most recently used last; the oldest go first
            self._text_cache[phrase] = known[phrase]
            self._text_cache.move_to_end(phrase)
        while len(self._text_cache) > self._text_cache_size:
            self._text_cache.popitem(last=False)
        parts = [known[p] for p in phrases]
        return TextEncoding(torch.cat([p.tokens for p in parts]), torch.cat([p.padding for p in parts]))

    def _geometry(self, boxes, box_labels, points, point_labels, size: tuple[int, int]) -> dict[str, Any]:
        height, width = size
        geometry: dict[str, Any] = {}
        if boxes is not None:
            xyxy = _as_boxes(boxes, size)
            geometry["boxes"] = pixel_xyxy_to_normalized_cxcywh(xyxy, height, width)[None]
            geometry["box_labels"] = _as_labels(box_labels, len(xyxy), "box_labels")[None]
        if points is not None:
            coords, labels = _as_points(points, point_labels, size)
            geometry["points"] = (coords / torch.tensor([width, height], dtype=torch.float32))[None]
            geometry["point_labels"] = labels[None]
        return geometry

    @staticmethod
    def _postprocess(outputs: dict[str, torch.Tensor], index: int, image: np.ndarray, prompt: dict,
                     threshold: float, mask_threshold: float) -> Results:
        height, width = image.shape[:2]
        masks, boxes, scores = postprocess(outputs, index, (height, width), threshold, mask_threshold)
        return Results(masks=masks.cpu().numpy(), boxes=boxes.cpu().numpy(), scores=scores.cpu().numpy(),
                       prompt=prompt, image_size=(height, width), image=image)


def postprocess(
    outputs: dict[str, torch.Tensor], index: int, size: tuple[int, int], threshold: float = 0.5,
    mask_threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official image post-processing of row `index` of a `detect` output, for an original image of `size`.

    Joint score sigmoid(logit) * sigmoid(presence), kept if >= threshold, sorted high to low; mask logits
    upsampled bilinearly, then sigmoid > mask_threshold. Returns masks [N, H, W] bool, boxes [N, 4] float32 XYXY
    pixels, scores [N] float32.
    """
    height, width = size
    scores = outputs["pred_logits"][index].float().sigmoid() * outputs["presence_logits"][index].float().sigmoid()
    keep = torch.nonzero(scores >= threshold).flatten()
    keep = keep[scores[keep].argsort(descending=True)]
    masks = _upsample_logits(outputs["pred_masks"][index, keep], size).sigmoid() > mask_threshold
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=keep.device)
    return masks, outputs["pred_boxes"][index, keep].float() * scale, scores[keep]


def _upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Low-res mask logits [N, h, w] -> [N, H, W] float32, bilinear (align_corners=False); N may be 0."""
    if len(logits) == 0:
        return logits.new_zeros((0, *size), dtype=torch.float32)
    return F.interpolate(logits.float()[None], size=size, mode="bilinear", align_corners=False)[0]


def _as_boxes(boxes: Any, size: tuple[int, int]) -> torch.Tensor:
    """XYXY pixel boxes -> float [K, 4], clipped to the image; boxes with no area inside it are an error."""
    height, width = size
    xyxy = torch.as_tensor(np.asarray(boxes, dtype=np.float64), dtype=torch.float32)
    if xyxy.dim() == 1:
        xyxy = xyxy[None]
    if xyxy.dim() != 2 or xyxy.shape[1] != 4 or len(xyxy) == 0:
        raise ValueError(f"boxes must be [K, 4] XYXY pixels, got shape {tuple(xyxy.shape)}")
    if not torch.isfinite(xyxy).all():
        raise ValueError("boxes must be finite numbers")
    clipped = torch.stack([xyxy[:, 0].clamp(0, width), xyxy[:, 1].clamp(0, height),
                           xyxy[:, 2].clamp(0, width), xyxy[:, 3].clamp(0, height)], dim=1)
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if empty.any():
        bad = xyxy[empty][0].tolist()
        raise ValueError(f"box {bad} has no area inside the {width}x{height} image (boxes are x1, y1, x2, y2 pixels)")
    return clipped


def _as_points(points: Any, labels: Any, size: tuple[int, int]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if points is None:
        if labels is not None:
            raise ValueError("point_labels given without points")
        return None, None
    height, width = size
    coords = torch.as_tensor(np.asarray(points, dtype=np.float64), dtype=torch.float32).reshape(-1, 2)
    if len(coords) == 0 or not torch.isfinite(coords).all():
        raise ValueError("points must be a non-empty [P, 2] list of finite (x, y) pixels")
    outside = (coords[:, 0] < 0) | (coords[:, 0] > width) | (coords[:, 1] < 0) | (coords[:, 1] > height)
    if outside.any():
        raise ValueError(f"point {coords[outside][0].tolist()} lies outside the {width}x{height} image")
    return coords, _as_labels(labels, len(coords), "point_labels")


def _as_labels(labels: Any, count: int, name: str) -> torch.Tensor:
    if labels is None:
        return torch.ones(count, dtype=torch.long)
    values = torch.as_tensor(np.asarray(labels)).reshape(-1).long()
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries for {count} prompts")
    if not torch.isin(values, torch.tensor([0, 1])).all():
        raise ValueError(f"{name} must be 1 (positive) or 0 (negative)")
    return values


def _describe(geometry: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """The exemplars of a prompt, back in XYXY pixels, for Results.prompt."""
    described: dict[str, Any] = {}
    height, width = size
    if "boxes" in geometry:
        described["boxes"] = normalized_cxcywh_to_pixel_xyxy(geometry["boxes"][0], height, width).tolist()
        described["box_labels"] = geometry["box_labels"][0].tolist()
    if "points" in geometry:
        described["points"] = (geometry["points"][0] * torch.tensor([width, height])).tolist()
        described["point_labels"] = geometry["point_labels"][0].tolist()
    return described
