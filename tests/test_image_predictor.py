"""ImagePredictor: caching, batching, coordinate conventions, post-processing, Results, bad inputs."""


import numpy as np
import PIL.Image
import pytest
import torch
from hf_reference import hf_model_for, hf_tracker_kwargs, randomize_, with_tied_fourier_matrix
from pycocotools import mask as mask_utils
from transformers import Sam3TrackerConfig, Sam3TrackerModel

import conceptseg
from conceptseg import SAM3, load_model, preprocess, tiny_config
from conceptseg.checkpoint.hf import hf_to_ours
from conceptseg.io.images import load_image
from conceptseg.predict.image import ImagePredictor
from conceptseg.predict.prompts import MAX_PHRASES


@pytest.fixture(scope="module")
def model():
    return randomize_(SAM3(tiny_config()), seed=11).eval()


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(90, 130, 3), dtype=np.uint8)


@pytest.fixture
def predictor(model, image):
    predictor = ImagePredictor(model)
    predictor.set_image(image)
    return predictor


def assert_same_results(a, b):
    assert np.array_equal(a.masks, b.masks)
    assert np.array_equal(a.boxes, b.boxes)
    assert np.array_equal(a.scores, b.scores)


def test_reprompt_reuses_the_backbone_and_is_bit_identical(model, image):
    calls = []
    hook = model.backbone.trunk.register_forward_hook(lambda *_: calls.append(1))
    try:
        predictor = ImagePredictor(model)
        predictor.set_image(image)
        first = predictor.predict(text="red circle", threshold=0.0)
        again = predictor.predict(text="red circle", threshold=0.0)
        other = predictor.predict(text="blue star", boxes=[[10, 20, 60, 70]], threshold=0.0)
        assert len(calls) == 1
        fresh = ImagePredictor(model)
        fresh.set_image(image)
        assert len(calls) == 2
        assert_same_results(first, again)
        assert_same_results(first, fresh.predict(text="red circle", threshold=0.0))
        assert_same_results(other, fresh.predict(text="blue star", boxes=[[10, 20, 60, 70]], threshold=0.0))
    finally:
        hook.remove()


def test_predict_many_equals_single_calls(predictor):
    texts = ["red circle", "large blue ring", "stars", "visual"]
    together = predictor.predict_many(texts, threshold=0.2)
    for text, batched in zip(texts, together):
        alone = predictor.predict(text=text, threshold=0.2)
        np.testing.assert_allclose(batched.scores, alone.scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batched.boxes, alone.boxes, rtol=1e-4, atol=1e-3)
        assert (batched.masks != alone.masks).mean() < 1e-3


@pytest.mark.parametrize("images_per_pass", [None, 1, 2])
def test_predict_batch_equals_predict_many_image_by_image(model, image, images_per_pass):
    rng = np.random.default_rng(1)
    images = [image, rng.integers(0, 256, size=(64, 48, 3), dtype=np.uint8), image[:50, 20:]]
    texts = ["red circle", "large blue ring", "stars"]
    predictor = ImagePredictor(model)
    predictor.set_image(images[1])
    batched = predictor.predict_batch(images, texts, threshold=0.2, images_per_pass=images_per_pass)
    assert predictor.image_size == (64, 48)  # the current image stays
    assert [len(row) for row in batched] == [3, 3, 3]
    for array, row in zip(images, batched):
        predictor.set_image(array)
        for text, got, expected in zip(texts, row, predictor.predict_many(texts, threshold=0.2)):
            assert got.prompt == {"text": text} and got.image_size == array.shape[:2]
            np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got.boxes, expected.boxes, rtol=1e-4, atol=1e-3)
            assert (got.masks != expected.masks).mean() < 1e-3
    assert sum(len(results) for row in batched for results in row) > 0
    with pytest.raises(ValueError, match="images_per_pass"):
        predictor.predict_batch(images, texts, images_per_pass=0)


def test_exemplars_encoded_on_the_image_itself_equal_drawn_ones(predictor, image):
    box, labels = [[10, 20, 80, 60], [40, 5, 120, 50]], [1, 0]
    encoded = predictor.encode_exemplars(image, boxes=box, box_labels=labels)
    assert encoded.tokens.shape[:2] == encoded.padding.shape == (1, 3)  # two boxes and the CLS token
    assert_same_results(predictor.predict(text="cat", boxes=box, box_labels=labels, threshold=0.0),
                        predictor.predict(text="cat", exemplars=encoded, threshold=0.0))


def test_exemplars_from_another_image_prompt_the_current_one(predictor, image):
    other = np.ascontiguousarray(image[::-1, ::-1])
    before = predictor.predict(text="cat", threshold=0.0)
    encoded = predictor.encode_exemplars(other, boxes=[[10, 20, 80, 60]])
    assert_same_results(before, predictor.predict(text="cat", threshold=0.0))  # the current image stays set
    cross = predictor.predict(exemplars=encoded, threshold=0.0)
    drawn_here = predictor.predict(boxes=[[10, 20, 80, 60]], threshold=0.0)
    assert cross.prompt == {"text": None, "exemplars": "encoded"} and len(cross.scores) == len(drawn_here.scores)
    assert not np.array_equal(cross.scores, drawn_here.scores)  # features pooled from the other image
    with pytest.raises(ValueError, match="not both"):
        predictor.predict(boxes=[[10, 20, 80, 60]], exemplars=encoded)
    with pytest.raises(ValueError, match="exemplar boxes or points"):
        predictor.encode_exemplars(other)


def test_encoded_exemplars_broadcast_over_a_batch(model, image):
    pixel_values = torch.stack([preprocess(image, model.config.vit.image_size)[0],
                                preprocess(image[::-1].copy(), model.config.vit.image_size)[0]])
    with torch.no_grad():
        encoded = model.encode_exemplars(pixel_values[:1], boxes=torch.tensor([[[0.5, 0.5, 0.3, 0.2]]]))
        both = model.detect(pixel_values, conceptseg.tokenize(["visual"]), exemplars=encoded)
        second = model.detect(pixel_values[1:], conceptseg.tokenize(["visual"]), exemplars=encoded)
        with pytest.raises(ValueError, match="encoded exemplar prompts"):
            model.detect(pixel_values[:1], conceptseg.tokenize(["visual"]),
                         exemplars=encoded.select(torch.tensor([0, 0, 0])))
    torch.testing.assert_close(both["pred_logits"][1:], second["pred_logits"], rtol=1e-4, atol=1e-5)


def test_mask_threshold_defaults_to_the_models_calibrated_one(model, image, tmp_path):
    calibrated = SAM3(model.config).eval()
    calibrated.load_state_dict(model.state_dict())
    calibrated.mask_threshold = 0.2
    conceptseg.save_model(calibrated, tmp_path / "calibrated")  # the setting travels with the weights
    predictor = ImagePredictor(load_model(tmp_path / "calibrated"))
    assert predictor.mask_threshold == 0.2
    predictor.set_image(image)
    default = predictor.predict(text="red circle", threshold=0.0)
    assert_same_results(default, predictor.predict(text="red circle", threshold=0.0, mask_threshold=0.2))
    at_half = predictor.predict(text="red circle", threshold=0.0, mask_threshold=0.5)
    assert (at_half.masks <= default.masks).all()  # a lower level keeps every pixel and adds some
    assert default.masks.sum() > at_half.masks.sum()
    chosen = ImagePredictor(calibrated, mask_threshold=0.5)  # a predictor setting overrides the saved one
    chosen.set_image(image)
    assert_same_results(chosen.predict(text="red circle", threshold=0.0), at_half)


def test_text_cache_is_bounded_and_reuses_recent_phrases(model, image):
    predictor = ImagePredictor(model, text_cache_size=2)
    predictor.set_image(image)
    first = predictor.predict(text="red circle", threshold=0.0)
    for phrase in ("blue star", "green ring", "red circle"):
        predictor.predict(text=phrase, threshold=0.0)
    assert predictor.text_cache.phrases() == ["green ring", "red circle"]
    assert_same_results(predictor.predict(text="red circle", threshold=0.0), first)


def test_pixel_boxes_reach_the_model_as_normalised_cxcywh(predictor, monkeypatch):
    seen = {}
    detect = predictor.model.detect

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return detect(*args, **kwargs)

    monkeypatch.setattr(predictor.model, "detect", spy)
    result = predictor.predict(text="cat", boxes=[[13.0, 9.0, 65.0, 81.0]], box_labels=[0], points=[[26, 45]])
    width, height = 130, 90
    expected = torch.tensor([[[(13 + 65) / 2 / width, (9 + 81) / 2 / height, 52 / width, 72 / height]]])
    torch.testing.assert_close(seen["boxes"], expected)
    assert seen["box_labels"].tolist() == [[0]]
    torch.testing.assert_close(seen["points"], torch.tensor([[[26 / width, 45 / height]]]))
    np.testing.assert_allclose(result.prompt["boxes"], [[13.0, 9.0, 65.0, 81.0]], atol=1e-4)


def test_post_processing_matches_the_reference(tmp_path, image):
    """Scores and boxes equal HF's post-processing; masks differ only where the official order (upsample logits,
    then sigmoid) and HF's (sigmoid, then upsample) disagree at edges."""
    from transformers import Sam3ImageProcessor

    hf = hf_model_for(tiny_config(), seed=2)
    hf.save_pretrained(tmp_path)
    predictor = ImagePredictor(load_model(tmp_path))
    predictor.set_image(image)
    ids = torch.tensor([[49406, 2368, 49407] + [0] * 29])
    with torch.no_grad():
        out = hf(pixel_values=preprocess(image, 112), input_ids=ids, attention_mask=(ids != 0).long(),
                 input_boxes=torch.tensor([[[0.5, 0.5, 0.1, 0.1]]]), input_boxes_labels=torch.tensor([[-10]]))
    scores = (out.pred_logits.sigmoid() * out.presence_logits.sigmoid())[0].sort(descending=True).values
    threshold = ((scores[3] + scores[4]) / 2).item()  # random weights score low: keep the top 4
    ours = predictor.predict(text="cat", threshold=threshold)
    processor = Sam3ImageProcessor(size={"height": 112, "width": 112}, mask_size={"height": 32, "width": 32})
    reference = processor.post_process_instance_segmentation(out, threshold=threshold, target_sizes=[(90, 130)])[0]
    order = reference["scores"].argsort(descending=True)
    assert len(ours) == len(order) > 0
    np.testing.assert_allclose(ours.scores, reference["scores"][order].numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.boxes, reference["boxes"][order].numpy(), rtol=1e-4, atol=1e-3)
    assert (ours.masks != reference["masks"][order].numpy().astype(bool)).mean() < 0.02


def test_to_coco_round_trips_through_pycocotools(predictor):
    result = predictor.predict(text="ring", threshold=0.0)
    records = result.to_coco(image_id=7, category_id=3)
    assert len(records) == len(result) > 0
    for record, mask, box in zip(records, result.masks, result.boxes):
        assert isinstance(record["segmentation"]["counts"], str)
        assert record["image_id"] == 7 and record["category_id"] == 3
        assert np.array_equal(mask_utils.decode(record["segmentation"]).astype(bool), mask)
        np.testing.assert_allclose(record["bbox"], [box[0], box[1], box[2] - box[0], box[3] - box[1]], rtol=1e-6)


def test_plot_and_save(predictor, tmp_path):
    result = predictor.predict(text="ring", threshold=0.0)
    overlay = result.plot()
    assert overlay.shape == (90, 130, 3) and overlay.dtype == np.uint8
    assert not np.array_equal(overlay, predictor._image)
    path = result.save(tmp_path / "overlay.png")
    assert np.array_equal(np.asarray(PIL.Image.open(path)), overlay)


def test_instance_prediction_matches_hf_tracker(image):
    """predict_instance = tracker neck + SAM prompt encoder + mask decoder, against Sam3TrackerModel."""
    config = tiny_config()
    hf = Sam3TrackerModel(Sam3TrackerConfig(**hf_tracker_kwargs(config)))
    hf = with_tied_fourier_matrix(randomize_(hf, 4).eval())
    hub_layout = {}
    for key, value in hf.state_dict().items():
        if key.startswith("vision_encoder.backbone."):
            hub_layout[f"detector_model.{key}"] = value
        elif key.startswith("vision_encoder.neck."):
            hub_layout[key.replace("vision_encoder.neck.", "tracker_neck.")] = value
        else:
            hub_layout[f"tracker_model.{key}"] = value
    ours = SAM3(config).eval()
    state = hf_to_ours(hub_layout)
    missing = set(ours.state_dict()) - set(state)
    interactive = ("backbone.trunk.", "backbone.tracker_neck.", "tracker.sam_", "tracker.no_mem_embed")
    assert not any(k.startswith(interactive) for k in missing)  # the image tracker has no memory weights
    ours.load_state_dict(state, strict=False)
    predictor = ImagePredictor(ours)
    predictor.set_image(image)
    scale = torch.tensor([112 / 130, 112 / 90])
    points, labels = torch.tensor([[30.0, 40.0], [100.0, 20.0]]), torch.tensor([1, 0])
    result = predictor.predict_instance(points=points, point_labels=labels)
    with torch.no_grad():
        # transformers 5.17 adds its no-memory embedding to the discarded 0.5x level when given pixel_values;
        # the official predictor adds it to the stride-14 level, so we hand HF its embeddings that way.
        embeddings = hf.get_image_embeddings(preprocess(image, 112))
        embeddings[-1] = embeddings[-1] + hf.no_memory_embedding.view(1, -1, 1, 1)
        reference = hf(image_embeddings=embeddings, input_points=(points * scale)[None, None],
                       input_labels=labels[None, None], multimask_output=True)
    order = reference.iou_scores[0, 0].argsort(descending=True)
    expected_logits = reference.pred_masks[0, 0, order]
    error = (result.low_res_logits - expected_logits).abs().max() / expected_logits.abs().max()
    assert error < 1e-4
    np.testing.assert_allclose(result.scores, reference.iou_scores[0, 0, order].numpy(), rtol=1e-4)


def test_instance_refinement_with_mask_input(predictor):
    first = predictor.predict_instance(points=[[40, 30]])
    refined = predictor.predict_instance(points=[[40, 30], [90, 60]], point_labels=[1, 0],
                                         mask_input=first.low_res_logits[:1][None], multimask=False)
    assert refined.masks.shape == (1, 90, 130)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_image_modes_are_converted(tmp_path, mode):
    array = np.random.default_rng(1).integers(0, 255, size=(20, 30), dtype=np.uint8)
    if mode == "I;16":
        picture = PIL.Image.fromarray(array.astype(np.uint16) * 257)
    elif mode == "RGBA":
        picture = PIL.Image.fromarray(np.stack([array] * 4, -1))
    else:
        picture = PIL.Image.fromarray(array).convert(mode)
    picture.save(tmp_path / "x.png")
    loaded = load_image(tmp_path / "x.png")
    assert loaded.shape == (20, 30, 3) and loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded[..., 0], array)


def test_bad_inputs_have_clear_errors(predictor, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        predictor.set_image(tmp_path / "broken.png")
    with pytest.raises(ValueError, match="empty"):
        predictor.set_image(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        predictor.set_image(np.zeros((5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="no area inside"):
        predictor.predict(boxes=[[200, 200, 300, 300]])
    with pytest.raises(ValueError, match="empty prompt"):
        predictor.predict()
    with pytest.raises(ValueError, match="non-empty"):
        predictor.predict(text="   ")
    with pytest.raises(ValueError, match=f"at most {MAX_PHRASES}"):
        predictor.predict_many(["cat"] * (MAX_PHRASES + 1))
    with pytest.raises(ValueError, match="outside"):
        predictor.predict(text="cat", points=[[500, 10]])
    with pytest.raises(ValueError, match="no image set"):
        ImagePredictor(predictor.model).predict(text="cat")


def test_boxes_partly_outside_are_clipped(predictor):
    clipped = predictor.predict(text="cat", boxes=[[-20, -10, 50, 40]], threshold=0.0)
    inside = predictor.predict(text="cat", boxes=[[0, 0, 50, 40]], threshold=0.0)
    assert_same_results(clipped, inside)
