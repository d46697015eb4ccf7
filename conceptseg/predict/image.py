"""ImagePredictor: encode an image once, then prompt it many times (text, exemplar boxes, points, clicks).

Public coordinates are pixels of the original image: points (x, y) and boxes XYXY. Conversion to the model's
normalised frame happens here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from conceptseg.io.images import ImageSource, load_image
from conceptseg.model.box_ops import (
    masks_to_boxes,
)
from conceptseg.model.detector import GeometryEncoding, ImageEncoding
from conceptseg.model.sam3 import SAM3
from conceptseg.predict.prompts import (
    TEXT_CACHE_SIZE,
    TextCache,
    as_boxes,
    as_points,
    check_phrases,
    describe_geometry,
    detector_geometry,
    upsample_logits,
)
from conceptseg.predict.results import Results
from conceptseg.predict.transforms import preprocess

# image tokens from which the fusion encoder and decoder run phrase by phrase on a CPU (see _prompt_chunk), and
# predict_batch encodes images one at a time
LARGE_IMAGE_TOKENS = 2048
# (image, phrase) pairs per pass of predict_batch for small images: on the embedded model (2 CPU threads, 3
# phrases) passes of 4 images ran at 33-34 images/s, of 16 images at 29-31 (their activations overflow the caches),
# one image at a time at 24
PAIRS_PER_PASS = 16


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
        self.text_cache = TextCache(text_cache_size)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the current image."""
        if self._image is None:
            raise ValueError("no image set: call set_image(image) first")
        return self._image.shape[0], self._image.shape[1]

    @property
    def cached_bytes(self) -> int:
        """Bytes held for the current image (its pixels and cached encodings), for caches bounded in bytes."""
        tensors = [] if self._encoding is None else [self._encoding.trunk, self._encoding.pos, *self._encoding.levels]
        tensors += self._tracker_levels or []
        pixels = 0 if self._image is None else self._image.nbytes
        return pixels + sum(tensor.numel() * tensor.element_size() for tensor in tensors)

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
        geometry = detector_geometry(boxes, box_labels, points, point_labels, array.shape[:2])
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
        phrases = check_phrases(texts, exemplars=boxes is not None or points is not None or exemplars is not None)
        height, width = self.image_size
        geometry = detector_geometry(boxes, box_labels, points, point_labels, (height, width))
        outputs = self.model.detect(encoding, self.text_cache.encode(self.model, phrases), exemplars=exemplars,
                                    prompt_chunk=self._prompt_chunk(), **geometry)
        if mask_threshold is None:
            mask_threshold = self.mask_threshold
        described = describe_geometry(geometry, (height, width)) | ({"exemplars": "encoded"} if exemplars is not None else {})
        return [
            detections(outputs, i, self._image, {"text": text, **described}, threshold, mask_threshold)
            for i, text in enumerate(texts)
        ]

    @torch.inference_mode()
    def predict_batch(
        self,
        images: Sequence[ImageSource],
        texts: Sequence[str],
        threshold: float = 0.5,
        mask_threshold: float | None = None,
        images_per_pass: int | None = None,
    ) -> list[list[Results]]:
        """Every phrase on every image: `results[i][j]` is phrase j on image i (as `predict` would find it).

        Images are encoded `images_per_pass` at a time (None: as many as keep a pass at about 16 image-phrase
        pairs, or one at a time for large images on a CPU) and each pass's pairs go through the
        detector as one batch. The predictor's current image (`set_image`) is left as it is.
        """
        phrases = check_phrases(texts, exemplars=False)
        if images_per_pass is None:
            images_per_pass = 1 if self._large_on_cpu() else max(1, PAIRS_PER_PASS // len(phrases))
        if images_per_pass < 1:
            raise ValueError(f"images_per_pass must be at least 1, got {images_per_pass}")
        text = self.text_cache.encode(self.model, phrases)
        mask_threshold = self.mask_threshold if mask_threshold is None else mask_threshold
        count = len(phrases)
        results = []
        for start in range(0, len(images), images_per_pass):
            arrays = [load_image(image) for image in images[start:start + images_per_pass]]
            encoding = self.model.detector.attend_image(self._encode_image(*arrays))  # before pairing
            if len(arrays) > 1:  # pairs image-major: row i * count + j is phrase j on image i
                encoding = encoding.select(torch.arange(len(arrays)).repeat_interleave(count))
                pass_text = text.select(torch.arange(count).repeat(len(arrays)))
            else:  # one image: `detect` pairs it with every phrase without copies
                pass_text = text
            outputs = self.model.detect(encoding, pass_text, prompt_chunk=self._prompt_chunk())
            results += [[detections(outputs, i * count + j, array, {"text": phrase}, threshold, mask_threshold)
                         for j, phrase in enumerate(texts)] for i, array in enumerate(arrays)]
        return results

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
            self._tracker_levels = self.model.tracker_features(encoding.trunk)
        height, width = self.image_size
        scale = self.model.config.vit.image_size / torch.tensor([width, height], dtype=torch.float32)
        coords, labels = as_points(points, point_labels, (height, width))
        model_points = None if coords is None else (coords * scale)[None].to(self.model.device, self.model.dtype)
        model_box = None
        if box is not None:
            xyxy = as_boxes([box], (height, width))
            model_box = (xyxy * scale.repeat(2)).to(self.model.device, self.model.dtype)
        point_labels_t = None if labels is None else labels[None].to(self.model.device)
        logits, iou, _ = self.model.tracker.predict_masks(
            self._tracker_levels, model_points, point_labels_t, model_box, mask_input, multimask
        )
        full = upsample_logits(logits[0], (height, width)) > 0
        order = iou[0].float().argsort(descending=True)
        masks = full[order]
        return Results(
            masks=masks.cpu().numpy(), boxes=masks_to_boxes(masks).cpu().numpy().astype(np.float32),
            scores=iou[0, order].float().cpu().numpy(), prompt={"points": points, "box": box},
            image_size=(height, width), image=self._image, low_res_logits=logits[0, order].float().cpu(),
        )

    def _prompt_chunk(self) -> int | None:
        """Phrases per fusion/decoder/mask-head pass: one at a time on a CPU when each phrase's activations are large (at
        full size, 5,184 image tokens, a phrase costs 2.5 s alone and 3.0 s in a batch of 10), all together
        otherwise (the embedded model, 256 tokens: 3 phrases take 40 ms batched, 60 ms one by one)."""
        return 1 if self._large_on_cpu() else None

    def _large_on_cpu(self) -> bool:
        """Whether the model runs on a CPU with at least LARGE_IMAGE_TOKENS image tokens."""
        return self.model.device.type == "cpu" and self.model.config.vit.grid_size ** 2 >= LARGE_IMAGE_TOKENS

    def _encode_image(self, *images: np.ndarray) -> ImageEncoding:
        """The encoding of one or more images, as one batch."""
        pixel_values = torch.cat([preprocess(image, self.model.config.vit.image_size) for image in images])
        return self.model.encode_image(pixel_values.to(self.model.device, self.model.dtype))

    def _require_image(self) -> ImageEncoding:
        if self._encoding is None:
            raise ValueError("no image set: call set_image(image) first")
        return self._encoding


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
    masks = upsample_logits(outputs["pred_masks"][index, keep], size).sigmoid() > mask_threshold
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=keep.device)
    return masks, outputs["pred_boxes"][index, keep].float() * scale, scores[keep]




def detections(outputs: dict[str, torch.Tensor], index: int, image: np.ndarray, prompt: dict, threshold: float,
               mask_threshold: float) -> Results:
    """`Results` of row `index` of a `detect` output on `image` (see `postprocess`)."""
    height, width = image.shape[:2]
    masks, boxes, scores = postprocess(outputs, index, (height, width), threshold, mask_threshold)
    return Results(masks=masks.cpu().numpy(), boxes=boxes.cpu().numpy(), scores=scores.cpu().numpy(),
                   prompt=prompt, image_size=(height, width), image=image)
