"""conceptseg's detector against transformers' Sam3Model with the same (tiny, random) weights."""

import pytest
import torch
from hf_reference import hf_model_for

from conceptseg import load_model, tiny_config, tokenize

TOLERANCE = 1e-4
OUTPUTS = ("pred_logits", "presence_logits", "pred_boxes", "pred_masks", "semantic_seg")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The HF reference and our model loaded from its `save_pretrained` directory through our HF loader."""
    hf = hf_model_for(tiny_config(), seed=0)
    directory = tmp_path_factory.mktemp("hf_tiny")
    hf.save_pretrained(directory)
    return hf, load_model(directory)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).abs().max() / reference.abs().max()).item()


def assert_parity(ours: dict, reference) -> None:
    for name in OUTPUTS:
        theirs = getattr(reference, name)
        assert ours[name].shape == theirs.shape, name
        assert relative_error(ours[name], theirs) <= TOLERANCE, name
    for mine, theirs in zip(ours["pred_logits"], reference.pred_logits):
        assert torch.equal(mine.topk(5).indices, theirs.topk(5).indices)


def hf_text(ids: torch.Tensor) -> dict:
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def masked_dummy_box(batch: int) -> dict:
    """The reference needs a masked box to run its geometry encoder (official semantics: CLS token always)."""
    return {"input_boxes": torch.tensor([[[0.5, 0.5, 0.1, 0.1]]] * batch),
            "input_boxes_labels": torch.full((batch, 1), -10)}


@torch.no_grad()
def test_text_only(models, images):
    hf, ours = models
    ids = tokenize(["a yellow school bus"])
    assert_parity(ours.detect(images[:1], ids), hf(pixel_values=images[:1], **hf_text(ids), **masked_dummy_box(1)))


@torch.no_grad()
def test_boxes_only(models, images):
    hf, ours = models
    ids = tokenize(["visual"])
    boxes = torch.tensor([[[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.5, 0.4]]])
    labels = torch.tensor([[1, 1]])
    reference = hf(pixel_values=images[:1], **hf_text(ids), input_boxes=boxes, input_boxes_labels=labels)
    assert_parity(ours.detect(images[:1], ids, boxes=boxes, box_labels=labels), reference)


@torch.no_grad()
def test_text_with_positive_and_negative_boxes(models, images):
    hf, ours = models
    ids = tokenize(["red circle"])
    boxes = torch.tensor([[[0.25, 0.25, 0.2, 0.2], [0.8, 0.1, 0.3, 0.15], [0.5, 0.9, 0.9, 0.2]]])
    labels = torch.tensor([[1, 0, 1]])
    reference = hf(pixel_values=images[1:], **hf_text(ids), input_boxes=boxes, input_boxes_labels=labels)
    assert_parity(ours.detect(images[1:], ids, boxes=boxes, box_labels=labels), reference)


@torch.no_grad()
def test_batch_of_two_with_padding(models, images):
    hf, ours = models
    ids = tokenize(["cat", "large striped hexagon"])
    boxes = torch.tensor([[[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]], [[0.5, 0.5, 0.4, 0.4], [0.1, 0.1, 0.1, 0.1]]])
    reference = hf(pixel_values=images, **hf_text(ids), input_boxes=boxes,
                   input_boxes_labels=torch.tensor([[1, 0], [1, -10]]))
    assert_parity(ours.detect(images, ids, boxes=boxes, box_labels=torch.tensor([[1, 0], [1, -1]])), reference)


@torch.no_grad()
def test_cached_encodings_are_bit_identical(models, images):
    _, ours = models
    ids = tokenize(["cat", "dog"])
    boxes = torch.tensor([[[0.3, 0.4, 0.2, 0.3]]] * 2)
    direct = ours.detect(images, ids, boxes=boxes)
    cached = ours.detect(ours.encode_image(images), ours.encode_text(ids), boxes=boxes)
    for name in OUTPUTS:
        assert torch.equal(direct[name], cached[name])


@torch.no_grad()
def test_one_image_broadcasts_against_many_prompts(models, images):
    _, ours = models
    ids = tokenize(["cat", "dog", "bus"])
    together = ours.detect(images[:1], ids)
    for i in range(3):
        alone = ours.detect(images[:1], ids[i : i + 1])
        for name in OUTPUTS:
            torch.testing.assert_close(together[name][i : i + 1], alone[name], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_the_image_only_fusion_step_runs_once_per_image(models, images):
    """The fusion encoder's first self-attention reads only the image: several prompts on one image share one
    computation of it, and a later prompt on the same encoding reuses it."""
    _, ours = models
    batches = []
    hook = ours.detector.fusion_encoder.layers[0].self_attn.register_forward_hook(
        lambda _module, inputs, _output: batches.append(inputs[0].shape[0]))
    try:
        encoding = ours.encode_image(images[:1])
        together = ours.detect(encoding, tokenize(["cat", "dog", "bus"]))
        again = ours.detect(encoding, tokenize(["bus"]))
        fresh = ours.detect(images[:1], tokenize(["bus"]))
    finally:
        hook.remove()
    assert batches == [1, 1]  # once for the shared encoding, once for the fresh image
    for name in OUTPUTS:
        assert torch.equal(again[name], fresh[name])
        torch.testing.assert_close(together[name][2:], fresh[name], rtol=1e-5, atol=1e-5)
