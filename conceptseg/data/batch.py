"""Examples -> the tensors `SAM3.detect` takes, preprocessed exactly as at inference."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from conceptseg.data.examples import Example
from conceptseg.model.box_ops import pixel_xyxy_to_normalized_cxcywh
from conceptseg.model.tokenizer import tokenize
from conceptseg.predict.transforms import preprocess_batch


def model_inputs(
    examples: Sequence[Example], image_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(pixel_values, input_ids, prompt_boxes, prompt_labels) of examples; images preprocessed exactly as at
    inference (`conceptseg.preprocess`), prompt boxes padded with label -1 (None when no example has any)."""
    pixel_values = preprocess_batch([e.image for e in examples], image_size)
    input_ids = tokenize([e.phrase for e in examples])
    num_prompts = max(len(e.prompt_boxes) for e in examples)
    if not num_prompts:
        return pixel_values, input_ids, None, None
    prompt_boxes = torch.full((len(examples), num_prompts, 4), 0.5)
    prompt_labels = torch.full((len(examples), num_prompts), -1, dtype=torch.long)
    for row, example in enumerate(examples):
        drawn_on = example.image if example.prompt_image is None else example.prompt_image
        count, (height, width) = len(example.prompt_boxes), drawn_on.shape[:2]
        boxes = torch.as_tensor(example.prompt_boxes, dtype=torch.float32).reshape(-1, 4)
        prompt_boxes[row, :count] = pixel_xyxy_to_normalized_cxcywh(boxes, height, width)
        prompt_labels[row, :count] = torch.as_tensor(example.prompt_labels, dtype=torch.long)
    return pixel_values, input_ids, prompt_boxes, prompt_labels
