"""Training data: batching, prompt sampling, determinism by position, SA-Co / COCO reading."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conceptseg.data import Variety
from conceptseg.data.examples import Example
from conceptseg.data.synthetic import ConceptWorld
from conceptseg.data.synthetic_export import export_saco_image_benchmark
from conceptseg.eval.dataset import SacoDataset
from conceptseg.io.rle import encode_mask
from conceptseg.model.tokenizer import EXEMPLAR_TEXT
from conceptseg.predict.transforms import preprocess
from conceptseg.train.data import ConceptWorldSource, DatasetSource, PromptSampling, collate, replace_world

SIZE = 48


def square_example(phrase: str = "square", with_instance: bool = True) -> Example:
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    masks = np.zeros((1 if with_instance else 0, SIZE, SIZE), dtype=bool)
    if with_instance:
        masks[0, 8:20, 4:28] = True
        image[masks[0]] = 255
    boxes = np.array([[4, 8, 28, 20]], dtype=np.float32)[: len(masks)]
    return Example(image, phrase, masks, boxes)


def test_collate_normalises_boxes_and_area_resizes_masks():
    batch = collate([square_example(), square_example(with_instance=False)], image_size=32, mask_size=12)
    assert batch.pixel_values.shape == (2, 3, 32, 32) and batch.input_ids.shape == (2, 32)
    torch.testing.assert_close(batch.pixel_values[:1], preprocess(square_example().image, 32))
    torch.testing.assert_close(batch.targets.boxes[0], torch.tensor([[16 / 48, 14 / 48, 24 / 48, 12 / 48]]))
    assert batch.targets.boxes[1].shape == (0, 4) and batch.targets.masks[1].shape == (0, 12, 12)
    mask = batch.targets.masks[0][0]  # 48 -> 12: each target pixel averages a 4x4 block
    assert mask[2, 1] == 1.0 and mask[0, 0] == 0.0 and mask.sum() == pytest.approx(12 * 24 / 16)
    assert batch.prompt_boxes is None and batch.prompt_labels is None


def test_collate_pads_prompt_boxes_with_label_minus_one():
    prompted = square_example()
    prompted.prompt_boxes = np.array([[4, 8, 28, 20], [0, 0, 12, 12]], dtype=np.float32)
    prompted.prompt_labels = np.array([True, False])
    batch = collate([square_example(), prompted], image_size=32, mask_size=8)
    assert batch.prompt_labels.tolist() == [[-1, -1], [1, 0]]
    torch.testing.assert_close(batch.prompt_boxes[1, 1], torch.tensor([6 / 48, 6 / 48, 12 / 48, 12 / 48]))


def test_concept_world_source_is_a_pure_function_of_the_position():
    source = ConceptWorldSource(ConceptWorld(size=64, seed=3), seed=5)
    for position in (0, 7, 123):
        first, again = source.example(position), source.example(position)
        assert first.phrase == again.phrase and np.array_equal(first.image, again.image)
        assert np.array_equal(first.masks, again.masks) and np.array_equal(first.prompt_boxes, again.prompt_boxes)


def test_curriculum_draws_its_first_examples_from_a_world_without_hard_negatives():
    world = ConceptWorld(size=48, seed=2, hard_negative_fraction=1.0)
    source = ConceptWorldSource(world, PromptSampling(0.0, 0.0), seed=4, easy_examples=20)
    easy_world = ConceptWorld(size=48, seed=2, hard_negative_fraction=0.0)
    assert {easy_world.sample(p).kind for p in range(20)} == {"positive", "easy_negative"}
    for position in range(0, 40, 3):
        expected = (easy_world if position < 20 else world).sample(position)
        example = source.example(position)
        assert example.phrase == expected.phrase and np.array_equal(example.image, expected.image)


def test_varied_share_draws_from_the_varied_world_and_is_not_distilled():
    world = ConceptWorld(size=SIZE, seed=4)
    varied_world = replace_world(world, variety=Variety(blur=True, jpeg=True))
    plain = ConceptWorldSource(world, seed=2)
    mixed = ConceptWorldSource(world, seed=2, varied_world=varied_world, varied_fraction=0.5)
    examples = [mixed.example(position) for position in range(60)]
    varied = [not e.distill for e in examples]
    assert 15 <= sum(varied) <= 45
    same = [np.array_equal(e.image, plain.example(position).image) for position, e in enumerate(examples)]
    assert all(s for s, v in zip(same, varied) if not v)  # exactly what a run without variety draws
    assert sum(not s for s, v in zip(same, varied) if v) >= 0.5 * sum(varied)  # blur or JPEG on 3 in 4
    batch = collate(examples[:8], SIZE, 16)
    assert batch.targets.distill == [e.distill for e in examples[:8]]
    with pytest.raises(ValueError, match="varied_world"):
        ConceptWorldSource(world, varied_fraction=0.3)


def test_exemplar_only_prompts_box_a_target_and_say_visual():
    source = ConceptWorldSource(ConceptWorld(size=64, seed=0), PromptSampling(exemplar_fraction=1.0,
                                                                            extra_box_fraction=0.0))
    for position in range(5):
        example = source.example(position)
        assert example.phrase == EXEMPLAR_TEXT
        assert example.prompt_labels.tolist() == [True]
        assert any(np.array_equal(example.prompt_boxes[0], box) for box in example.boxes)


def test_extra_boxes_are_targets_if_positive_and_distractors_if_negative():
    source = ConceptWorldSource(ConceptWorld(size=64, seed=1), PromptSampling(0.0, 1.0))
    seen_labels = set()
    for position in range(40):
        example = source.example(position)
        assert example.phrase != EXEMPLAR_TEXT and len(example.prompt_boxes) <= 2
        for box, label in zip(example.prompt_boxes, example.prompt_labels):
            pool = example.boxes if label else example.distractor_boxes
            assert any(np.array_equal(box, candidate) for candidate in pool)
            seen_labels.add(bool(label))
    assert seen_labels == {True, False}


def test_cross_exemplars_box_another_scene_and_target_its_colour_and_shape_here():
    world = ConceptWorld(size=64, seed=3)
    source = ConceptWorldSource(world, PromptSampling(0.0, 0.0, cross_exemplar_fraction=1.0))
    examples = [source.example(position) for position in range(24)]
    for position, example in enumerate(examples):
        scene = world.sample(position)
        reference = example.prompt_image
        assert example.phrase == EXEMPLAR_TEXT and reference is not None
        assert not np.array_equal(reference, example.image) and example.prompt_labels.tolist() == [True]
        (x0, y0, x1, y1), = example.prompt_boxes.astype(int)
        assert reference[y0:y1, x0:x1].std() > 0  # a box on an object of the reference scene
        if len(example.boxes):  # a positive: every instance here of one colour and shape, the boxed one's
            shape_colour = {tuple(row[:2]) for row in example.attributes.tolist()}
            assert len(shape_colour) == 1
            alike = [obj for obj in scene.instances if obj.indices[:2] == next(iter(shape_colour))]
            assert len(alike) == len(example.boxes)
    positives = sum(len(example.boxes) > 0 for example in examples)
    assert 0 < positives < len(examples)
    assert np.array_equal(source.example(5).prompt_image, examples[5].prompt_image)

    batch = collate(examples[:4], image_size=32, mask_size=8)
    assert batch.prompt_rows.tolist() == [0, 1, 2, 3] and batch.prompt_pixel_values.shape == (4, 3, 32, 32)
    torch.testing.assert_close(batch.prompt_pixel_values[:1], preprocess(examples[0].prompt_image, 32))
    with pytest.raises(ValueError, match="concept-world"):
        DatasetSource([square_example()], PromptSampling(0.0, 0.0, cross_exemplar_fraction=0.5))


def test_dataset_source_visits_every_example_once_per_epoch():
    dataset = [square_example(phrase=f"square {i}") for i in range(5)]
    source = DatasetSource(dataset, PromptSampling(0.0, 0.0), seed=0)
    epochs = [[source.example(epoch * 5 + i).phrase for i in range(5)] for epoch in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(e.phrase for e in dataset)
    assert epochs[0] != epochs[1]  # reshuffled


def test_saco_dataset_reads_an_exported_benchmark(tmp_path):
    gt = export_saco_image_benchmark(tmp_path, num_pairs=6, seed=2, split="test", size=64)
    world = ConceptWorld(size=64, split="test", seed=2)
    dataset = SacoDataset(gt, tmp_path / "images")
    assert len(dataset) == 6
    for index in range(6):
        example, sample = dataset[index], world.sample(index)
        assert example.phrase == sample.phrase and np.array_equal(example.image, sample.image)
        assert np.array_equal(example.masks, sample.masks)
        np.testing.assert_allclose(example.boxes, sample.boxes, atol=1e-4)


def test_saco_dataset_exemplar_prompts(tmp_path):
    gt = export_saco_image_benchmark(tmp_path, num_pairs=3, seed=2, split="test", size=64, prompt="exemplar")
    world = ConceptWorld(size=64, split="test", seed=2)
    example = SacoDataset(gt, tmp_path / "images", prompt="exemplar")[1]
    assert example.phrase == EXEMPLAR_TEXT
    np.testing.assert_allclose(example.prompt_boxes, world.exemplar_sample(1).exemplar_boxes, atol=1e-4)
    with pytest.raises(ValueError, match="exemplar_boxes"):
        SacoDataset(export_saco_image_benchmark(tmp_path / "t", 2, 0), tmp_path / "t" / "images", prompt="exemplar")


def test_plain_coco_gives_one_pair_per_image_and_category(tmp_path):
    Image.fromarray(square_example().image).save(tmp_path / "a.png")
    mask = square_example().masks[0]
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "height": SIZE, "width": SIZE}],
        "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [4, 8, 24, 12], "iscrowd": 0,
             "segmentation": [[4, 8, 28, 8, 28, 20, 4, 20]]},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [4, 8, 24, 12], "iscrowd": 0,
             "segmentation": encode_mask(mask)},
        ],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    dataset = SacoDataset(tmp_path / "coco.json", tmp_path)
    squares, circles = dataset[0], dataset[1]
    assert (squares.phrase, circles.phrase) == ("square", "circle")
    assert len(squares.masks) == 2 and len(circles.masks) == 0
    assert np.array_equal(squares.masks[1], mask)
    assert abs(int(squares.masks[0].sum()) - int(mask.sum())) <= 40  # polygon rasterisation differs at edges
    np.testing.assert_allclose(squares.boxes[0], [4, 8, 28, 20])


def test_missing_image_is_reported(tmp_path):
    gt = export_saco_image_benchmark(tmp_path, num_pairs=1, seed=0, size=64)
    with pytest.raises(FileNotFoundError, match="image directory"):
        SacoDataset(gt, tmp_path / "nowhere")[0]
