"""SAM 3: one vision backbone (ViT + two necks) shared by the concept detector and the tracker."""

from __future__ import annotations

import torch
from torch import nn

from conceptseg.model.configs import SAM3Config
from conceptseg.model.detector import Detector, GeometryEncoding, GeometryPrompt, ImageEncoding, TextEncoding
from conceptseg.model.neck import Neck
from conceptseg.model.position_encoding import sine_position_encoding
from conceptseg.model.tracker.tracker import Tracker
from conceptseg.model.vit import ViT


class Backbone(nn.Module):
    """ViT trunk plus the detector neck and the tracker neck (same architecture, separate weights)."""

    def __init__(self, config: SAM3Config) -> None:
        super().__init__()
        self.trunk = ViT(config.vit)
        self.neck = Neck(config.vit.width, config.d_model)
        self.tracker_neck = Neck(config.vit.width, config.d_model)


class SAM3(nn.Module):
    """The whole model. `detect` runs promptable concept segmentation; the tracker serves clicks and video."""

    def __init__(self, config: SAM3Config) -> None:
        super().__init__()
        self.config = config
        # parts whose weights the loaded checkpoint did not carry ("tracker", "detector_points")
        self.missing_components: tuple[str, ...] = ()
        # Not architecture but saved with the weights: the sigmoid level at which predictors binarise instance
        # masks unless told otherwise (0.5 in SAM 3; calibration may move it for a model whose mask logits are
        # biased, see `conceptseg.train.calibration`).
        self.mask_threshold = 0.5
        self.backbone = Backbone(config)
        self.detector = Detector(config)
        self.tracker = Tracker(config)

    @property
    def device(self) -> torch.device:
        return self.backbone.trunk.pos_embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.trunk.pos_embed.dtype

    def encode_image(self, pixel_values: torch.Tensor) -> ImageEncoding:
        """pixel_values: [B, 3, S, S] preprocessed (resized to S = config.vit.image_size, mean = std = 0.5)."""
        return self.detector_features(self.encode_trunk(pixel_values))

    def encode_trunk(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The ViT trunk's map [B, C_vit, G, G], which both necks read (pixel_values as for `encode_image`)."""
        _check_pixel_values(pixel_values, self.config.vit.image_size)
        return self.backbone.trunk(pixel_values.to(self.dtype))

    def tracker_features(self, trunk: torch.Tensor) -> list[torch.Tensor]:
        """The tracker neck's maps of a trunk map, finest first: [B, d, 4G, 4G], [B, d, 2G, 2G], [B, d, G, G]."""
        return self.backbone.tracker_neck(trunk)

    def detector_features(self, trunk: torch.Tensor) -> ImageEncoding:
        """The detector's encoding of a trunk map: its neck's maps and their position encoding."""
        levels = self.backbone.neck(trunk)
        height, width = levels[-1].shape[-2:]
        pos = sine_position_encoding(height, width, self.config.d_model, trunk.device, trunk.dtype)
        return ImageEncoding(trunk, levels, pos)

    def encode_text(self, input_ids: torch.Tensor) -> TextEncoding:
        """input_ids: [B, L] CLIP BPE ids from `conceptseg.tokenize` (padded with 0)."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype != torch.long or input_ids.dim() != 2:
            raise TypeError("input_ids must be a LongTensor [B, L]; build it with conceptseg.tokenize(texts)")
        if input_ids.shape[1] > self.config.text.context_length:
            raise ValueError(f"input_ids are longer than the context length {self.config.text.context_length}")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.text.vocab_size):
            raise ValueError(f"input_ids must lie in [0, {self.config.text.vocab_size})")
        tokens, padding = self.detector.text_encoder(input_ids.to(self.device))
        return TextEncoding(tokens, padding)

    def detect(
        self,
        pixel_values: torch.Tensor | ImageEncoding,
        input_ids: torch.Tensor | TextEncoding,
        boxes: torch.Tensor | None = None,
        box_labels: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        exemplars: GeometryEncoding | None = None,
        prompt_chunk: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Find every instance of a concept prompt.

        pixel_values: [B, 3, S, S] preprocessed images, or an `ImageEncoding` from `encode_image`.
        input_ids: [B, L] token ids (use the text "visual" for exemplar-only prompts), or a `TextEncoding`.
        boxes: [B, K, 4] exemplar boxes, normalised cxcywh in [0, 1]; box_labels: [B, K] in {1 pos, 0 neg, -1 pad}.
        points: [B, P, 2] normalised xy; point_labels: [B, P] likewise.
        exemplars: instead of boxes and points, exemplars encoded on other images by `encode_exemplars` (batch B or 1).
        An image or text batch of 1 is broadcast against the other. prompt_chunk: see `Detector.forward`.
        Returns a dict with pred_logits [B, Q], presence_logits [B, 1], pred_boxes [B, Q, 4] normalised xyxy,
        pred_masks [B, Q, 4G, 4G] logits and semantic_seg [B, 1, 4G, 4G] (plus per-layer outputs used by
        training).
        """
        image = pixel_values if isinstance(pixel_values, ImageEncoding) else self.encode_image(pixel_values)
        self.detector.attend_image(image)  # before one image meets several prompts, which then share it
        text = input_ids if isinstance(input_ids, TextEncoding) else self.encode_text(input_ids)
        if exemplars is None and all(prompt is None for prompt in (boxes, box_labels, points, point_labels)) \
                and image.trunk.shape[0] == 1:
            # Text alone: the geometry prompt is its CLS token attending to the image, the same for every phrase
            # of this image, so it is encoded once rather than once per phrase.
            exemplars = self.detector.encode_geometry(image, self._geometry_prompt(1, None, None, None, None))
        image, text = _broadcast(image, text)
        batch = text.tokens.shape[0]
        if exemplars is None:
            geometry = self._geometry_prompt(batch, boxes, box_labels, points, point_labels)
            return self.detector(image, text, geometry, prompt_chunk)
        if boxes is not None or points is not None:
            raise ValueError("give encoded exemplars or boxes/points, not both")
        if exemplars.tokens.shape[0] not in (1, batch):
            raise ValueError(f"{exemplars.tokens.shape[0]} encoded exemplar prompts for a batch of {batch}")
        if exemplars.tokens.shape[0] != batch:
            exemplars = exemplars.select(torch.zeros(batch, dtype=torch.long))
        return self.detector(image, text, exemplars, prompt_chunk)

    def encode_exemplars(
        self,
        pixel_values: torch.Tensor | ImageEncoding,
        boxes: torch.Tensor | None = None,
        box_labels: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> GeometryEncoding:
        """Encode exemplar boxes and/or points drawn on these images, to prompt `detect(exemplars=...)` on others
        (cross-image exemplars; not a mode of the official model). Arguments as in `detect`; one prompt per image.
        """
        if boxes is None and points is None:
            raise ValueError("give exemplar boxes or points")
        image = pixel_values if isinstance(pixel_values, ImageEncoding) else self.encode_image(pixel_values)
        geometry = self._geometry_prompt(image.trunk.shape[0], boxes, box_labels, points, point_labels)
        return self.detector.encode_geometry(image, geometry)

    def _geometry_prompt(
        self,
        batch: int,
        boxes: torch.Tensor | None,
        box_labels: torch.Tensor | None,
        points: torch.Tensor | None,
        point_labels: torch.Tensor | None,
    ) -> GeometryPrompt:
        if points is not None and "detector_points" in self.missing_components:
            raise ValueError("this checkpoint has no weights for detector point prompts (Hugging Face checkpoints "
                             "drop them); use boxes, or load the official sam3.pt")
        return GeometryPrompt(
            *_check_prompt(boxes, box_labels, batch, 4, "boxes", self.device, self.dtype),
            *_check_prompt(points, point_labels, batch, 2, "points", self.device, self.dtype),
        )


def _broadcast(image: ImageEncoding, text: TextEncoding) -> tuple[ImageEncoding, TextEncoding]:
    num_images, num_texts = image.trunk.shape[0], text.tokens.shape[0]
    if num_images == num_texts:
        return image, text
    if num_images == 1:
        return image.expand(num_texts), text
    if num_texts == 1:
        return image, text.select(torch.zeros(num_images, dtype=torch.long))
    raise ValueError(f"{num_images} images and {num_texts} prompts: the batches must match, or one must be 1")


def _check_pixel_values(pixel_values: torch.Tensor, size: int) -> None:
    if not isinstance(pixel_values, torch.Tensor) or not pixel_values.is_floating_point():
        raise TypeError("pixel_values must be a float tensor [B, 3, S, S]; build it with conceptseg.preprocess(image)")
    if pixel_values.dim() != 4 or pixel_values.shape[1] != 3 or tuple(pixel_values.shape[-2:]) != (size, size):
        raise ValueError(
            f"pixel_values must have shape [B, 3, {size}, {size}], got {tuple(pixel_values.shape)}; "
            f"use conceptseg.preprocess(image, size={size})"
        )


def _check_prompt(
    coords: torch.Tensor | None,
    labels: torch.Tensor | None,
    batch: int,
    width: int,
    name: str,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Validate exemplar boxes or points and their labels; labels default to all-positive."""
    label_name = {"boxes": "box_labels", "points": "point_labels"}[name]
    if coords is None:
        if labels is not None:
            raise ValueError(f"{label_name} given without {name}")
        return None, None
    coords = torch.as_tensor(coords)
    if coords.dim() == 2:
        coords = coords[None]
    if coords.dim() != 3 or coords.shape[-1] != width:
        raise ValueError(f"{name} must have shape [B, N, {width}], got {tuple(coords.shape)}")
    if coords.shape[0] == 1 and batch > 1:
        coords = coords.expand(batch, -1, -1)
    if coords.shape[0] != batch:
        raise ValueError(f"{name} batch {coords.shape[0]} does not match the prompt batch {batch}")
    labels = torch.ones(coords.shape[:2], dtype=torch.long) if labels is None else torch.as_tensor(labels)
    if labels.dim() == 1:
        labels = labels[None]
    labels = labels.expand(batch, -1) if labels.shape[0] == 1 else labels
    if labels.shape != coords.shape[:2]:
        raise ValueError(f"{label_name} must have shape {tuple(coords.shape[:2])}, got {tuple(labels.shape)}")
    if not torch.isin(labels, torch.tensor([-1, 0, 1], device=labels.device)).all():
        raise ValueError(f"{label_name} must be 1 (positive), 0 (negative) or -1 (padding)")
    valid = coords[labels >= 0]
    if not torch.isfinite(valid).all() or (valid < 0).any() or (valid > 1).any():
        raise ValueError(f"{name} must be finite and normalised to [0, 1] (divide pixel coordinates by the image size)")
    coords = torch.where((labels >= 0)[..., None], coords, torch.full_like(coords, 0.5))
    return coords.to(device, dtype), labels.to(device, torch.long)
