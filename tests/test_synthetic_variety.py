"""Tests of the concept world's training-time variety (`Variety`), non-square images and the shape-only
negative curriculum; with every factor off the world must stay bit-for-bit what it was."""

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from scipy.ndimage import binary_fill_holes

from conceptseg.data import Variety
from conceptseg.data.synthetic import ConceptWorld, Sample
from conceptseg.data.synthetic_export import export_saco_image_benchmark
from conceptseg.data.synthetic_phrases import COLOURS, SHAPES, classify_query
from conceptseg.data.synthetic_render import (
    Placement,
    Stroke,
    compose_owners,
    paint_objects,
    sample_appearance,
    shape_mask,
)
from conceptseg.data.synthetic_shapes import HELDOUT_VARIANTS, TRAIN_VARIANTS, erode, sample_drawing
from conceptseg.data.synthetic_style import CONFUSABLE_SHAPES, VARIETY_FACTORS, gaussian_blur

# Digests of the original concept world (recorded before variety existed; see `pinned_digests`).
PINNED_SAMPLES = "6bdb68bbcff0bddd9880a5430bb6e8f5b18107a8e752b9b327d39d29e80084bf"
PINNED_PROMPTS = "69cc8b4f486d988578856655f70a191f7972f4d5ee74a4a5cce67c34031d051b"
NAMES = list(COLOURS)
NAMED_RGB = np.array(list(COLOURS.values()), dtype=np.float64)


def digest(parts) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() if isinstance(part, str) else np.ascontiguousarray(part).tobytes())
    return hasher.hexdigest()


def sample_parts(sample: Sample) -> tuple:
    return (sample.image, sample.instance_masks, sample.instance_boxes, sample.target_indices, sample.phrase,
            sample.kind)


def pinned_digests(**options) -> tuple[str, str]:
    """Digests of 40 text samples at 224 px, and of exemplar, reference and video samples at 96 px."""
    world = ConceptWorld(size=224, split="test", seed=2026, **options)
    samples = digest(part for i in range(40) for part in sample_parts(world.sample(i)))
    small = ConceptWorld(size=96, split="test", seed=2026, **options)
    parts = []
    for i in range(6):
        exemplar = small.exemplar_sample(i)
        parts += [*sample_parts(exemplar), exemplar.exemplar_boxes]
    parts += [p for i in range(4) for p in sample_parts(small.reference_sample("square", "orange", i))]
    for i in range(3):
        clip = small.video(i, num_frames=4)
        parts += [clip.frames, clip.instance_masks, clip.instance_boxes, clip.phrase]
    return samples, digest(parts)


def tight_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def high_frequency(image: np.ndarray) -> float:
    return float(np.abs(np.diff(image.astype(np.float64), axis=1)).mean())


def nearest_colour(rgb) -> str:
    return NAMES[int(np.argmin(np.linalg.norm(NAMED_RGB - np.asarray(rgb), axis=1)))]


def render(placement: Placement, size: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """A placement painted alone on a grey canvas: (its full-image mask, the float canvas)."""
    shape = shape_mask(placement)
    owners = compose_owners([shape], (size, size))
    canvas = np.full((size, size, 3), 128.0, dtype=np.float32)
    paint_objects(canvas, owners, [placement], [shape])
    return owners == 0, canvas


def test_default_output_is_pinned_and_an_explicit_empty_variety_changes_nothing():
    assert pinned_digests() == (PINNED_SAMPLES, PINNED_PROMPTS)
    assert pinned_digests(variety=Variety()) == (PINNED_SAMPLES, PINNED_PROMPTS)
    assert ConceptWorld(size=64).sample(0).style == {}
    # Factors that only restyle draw from their own generator: the scene itself stays the default one.
    default, styled = ConceptWorld(size=96, seed=1), ConceptWorld(size=96, seed=1, variety=Variety(blur=True))
    for index in range(8):
        a, b = default.sample(index), styled.sample(index)
        assert a.phrase == b.phrase and np.array_equal(a.instance_masks, b.instance_masks)
        assert b.style["height"] == 96 and b.style["variants"] == ["default"] * len(b.instances)


def test_every_drawing_variant_stays_inside_its_radius_and_held_out_drawings_are_new():
    radius, centre = 30.0, (40.3, 39.7)
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        default = shape_mask(Placement(shape, "solid", (200.0, 0.0, 0.0), *centre, radius, 0.4)).mask
        train, heldout = [], []
        for styles, masks in (("train", train), ("heldout", heldout)):
            for _ in range(16 if styles == "train" else 4):
                drawing = sample_drawing(rng, shape, styles)
                allowed = [name for name, _ in TRAIN_VARIANTS[shape]] if styles == "train" else \
                    [HELDOUT_VARIANTS[shape][0]]
                assert drawing.variant in allowed
                placement = Placement(shape, "solid", (200.0, 0.0, 0.0), *centre, radius, 0.4, drawing)
                window = shape_mask(placement)
                ys, xs = np.nonzero(window.mask)
                distances = np.hypot(xs + window.left + 0.5 - centre[0], ys + window.top + 0.5 - centre[1])
                assert distances.max() <= radius + 1e-4, (shape, drawing)
                assert len(ys) > 0.15 * np.pi * radius ** 2, (shape, drawing)
                masks.append(window.mask)
        distinct_train = {mask.tobytes() for mask in train}
        if shape in ("circle", "hexagon"):  # one parameter-free training drawing: the default one
            assert distinct_train == {default.tobytes()}
        else:  # continuous parameters: (almost) every drawing differs
            assert len(distinct_train) > 8, shape
        assert not distinct_train & {mask.tobytes() for mask in heldout}, shape


def test_shape_variants_in_scenes_come_from_the_asked_styles():
    seen: dict[str, set[str]] = {}
    for sample in map(ConceptWorld(size=96, seed=2, variety=Variety(shape_variants=True)).sample, range(40)):
        for obj, variant in zip(sample.instances, sample.style["variants"]):
            seen.setdefault(obj.shape, set()).add(variant)
    for shape, variants in seen.items():
        assert variants <= {name for name, _ in TRAIN_VARIANTS[shape]}, shape
    assert seen["triangle"] == {"equilateral", "isosceles"}
    for sample in map(ConceptWorld(size=96, seed=2, variety=Variety(styles="heldout")).sample, range(10)):
        assert sample.style["variants"] == [HELDOUT_VARIANTS[obj.shape][0] for obj in sample.instances]
    for sample in map(ConceptWorld(size=96, seed=2, variety=Variety(outlines=True)).sample, range(10)):
        assert set(sample.style["variants"]) <= {"default"}


def test_outlines_are_darker_and_hollow_shapes_have_holes():
    plain = Placement("square", "solid", (200.0, 60.0, 60.0), 40.3, 39.7, 25.0, 0.3)
    outlined = replace(plain, stroke=Stroke(2, 0.45))
    hollow = replace(plain, stroke=Stroke(2, 1.0, hollow=True))
    plain_mask, _ = render(plain)
    outlined_mask, canvas = render(outlined)
    hollow_mask, _ = render(hollow)
    assert np.array_equal(plain_mask, outlined_mask), "an outline is part of the object's mask"
    border = outlined_mask & ~erode(outlined_mask, 2)
    interior = erode(outlined_mask, 4)
    assert canvas[border].mean() < 0.6 * canvas[interior].mean()
    assert hollow_mask.sum() < 0.4 * plain_mask.sum()
    assert np.array_equal(binary_fill_holes(hollow_mask), plain_mask)
    hollow_count = holes = 0
    for sample in map(ConceptWorld(size=128, seed=3, variety=Variety(outlines=True)).sample, range(30)):
        luminance = sample.image.astype(np.float64).mean(axis=2)
        for obj, width, hollow_flag, mask in zip(sample.instances, sample.style["outlined"],
                                                  sample.style["hollow"], sample.instance_masks):
            assert not (width and hollow_flag)
            if hollow_flag:
                assert obj.shape not in ("circle", "ring") and obj.pattern == "solid"
                hollow_count += 1
                holes += binary_fill_holes(mask).sum() > mask.sum()  # unless occlusion opened the stroke
            elif width != 1 and obj.pattern == "solid" and erode(mask, 4).any():
                contrast = luminance[mask & ~erode(mask, 1)].mean() / luminance[erode(mask, 4)].mean()
                assert contrast < 0.8 if width else contrast > 0.9
    assert hollow_count >= 5 and holes >= hollow_count / 2


def test_blur_and_jpeg_change_only_the_image():
    default = ConceptWorld(size=96, seed=5)
    worlds = {factor: ConceptWorld(size=96, seed=5, variety=Variety(**{factor: True}))
              for factor in ("blur", "jpeg")}
    applied = {"blur": 0, "jpeg": 0}
    for index in range(24):
        plain = default.sample(index)
        for factor, world in worlds.items():
            sample = world.sample(index)
            assert np.array_equal(sample.instance_masks, plain.instance_masks)
            assert sample.phrase == plain.phrase
            setting = sample.style[factor]
            if not setting:
                assert np.array_equal(sample.image, plain.image)
                continue
            applied[factor] += 1
            if factor == "blur" and setting >= 0.3:  # a smaller sigma may leave the image as it is
                assert high_frequency(sample.image) < 0.9 * high_frequency(plain.image)
            if factor == "jpeg":
                assert 30 <= setting <= 95 and not np.array_equal(sample.image, plain.image)
    assert 6 <= applied["blur"] <= 18 and 6 <= applied["jpeg"] <= 18
    image = np.random.default_rng(0).integers(0, 256, (9, 14, 3)).astype(np.uint8)
    kernel = np.exp(-0.5 * (np.arange(-2, 3) / 0.9) ** 2)
    reference = image.astype(np.float64)
    for axis in (0, 1):  # a plain separable convolution with clamped edges
        padded = np.pad(reference, [(2, 2) if a == axis else (0, 0) for a in range(3)], mode="edge")
        reference = sum(weight * np.take(padded, range(i, i + image.shape[axis]), axis=axis)
                        for i, weight in enumerate(kernel / kernel.sum()))
    np.testing.assert_array_equal(gaussian_blur(image, 0.9), np.floor(reference + 0.5))


def test_colour_jitter_is_wider_but_keeps_every_colour_name():
    default = ConceptWorld(size=64, seed=6)
    jittered = ConceptWorld(size=64, seed=6, variety=Variety(colour_jitter=True))
    narrow = ConceptWorld(size=64, seed=6, variety=Variety(jpeg=True))
    widest = {"jittered": 0.0, "narrow": 0.0}
    for index in range(60):
        sample = jittered.sample(index)
        assert np.array_equal(sample.instance_masks, default.sample(index).instance_masks)
        for name, source in (("jittered", sample), ("narrow", narrow.sample(index))):
            for obj, rgb in zip(source.instances, source.style["rgb"]):
                assert nearest_colour(rgb) == obj.colour
                widest[name] = max(widest[name], np.abs(np.array(rgb) - COLOURS[obj.colour]).max())
    assert widest["narrow"] <= 12 and widest["jittered"] > 35


def test_textured_backgrounds_appear_and_the_held_out_kind_only_in_held_out_styles():
    default = ConceptWorld(size=96, seed=7)
    train_kinds, heldout_kinds = set(), set()
    for index in range(40):
        sample = ConceptWorld(size=96, seed=7, variety=Variety(backgrounds=True)).sample(index)
        assert np.array_equal(sample.instance_masks, default.sample(index).instance_masks)
        train_kinds.add(sample.style["background"])
        heldout_kinds.add(ConceptWorld(size=96, seed=7, variety=Variety(styles="heldout")).sample(index)
                          .style["background"])
    assert {"grain", "stripes", "dots"} <= train_kinds and "checker" not in train_kinds
    assert train_kinds & {"flat", "gradient", "blotches", "clutter"}
    assert "checker" in heldout_kinds and not heldout_kinds & {"grain", "stripes", "dots"}
    assert len(heldout_kinds) >= 3


def test_wider_scales_keep_small_and_large_apart():
    radii = {}
    for name, variety in (("wide", Variety(scale=True)), ("default", Variety(jpeg=True))):
        world = ConceptWorld(size=128, seed=8, variety=variety)
        found = {"small": [], "large": []}
        for sample in map(world.sample, range(40)):
            for obj, radius in zip(sample.instances, sample.style["radius"]):
                found[obj.size].append(radius / 128)
        radii[name] = {word: (min(values), max(values)) for word, values in found.items()}
    assert 0.045 <= radii["default"]["small"][0] and radii["default"]["large"][1] <= 0.15
    assert radii["wide"]["small"][0] < 0.042 and radii["wide"]["large"][1] > 0.155
    assert radii["wide"]["small"][1] < radii["wide"]["large"][0]
    rng = np.random.default_rng(0)
    small = [sample_appearance(rng, "red", "small", 100.0, wide=True)[0] for _ in range(500)]
    large = [sample_appearance(rng, "red", "large", 100.0, wide=True)[0] for _ in range(500)]
    assert max(small) < min(large)


def check_geometry(sample: Sample) -> None:
    height, width = sample.image.shape[:2]
    assert sample.instance_masks.shape == (len(sample.instances), height, width)
    assert (sample.instance_masks.sum(axis=0) <= 1).all()
    for mask, box in zip(sample.instance_masks, sample.instance_boxes):
        np.testing.assert_array_equal(box, tight_box(mask))


def test_aspect_gives_each_image_its_own_size_of_about_the_same_area():
    world = ConceptWorld(size=96, seed=9, variety=Variety(aspect=True))
    shapes = []
    for sample in map(world.sample, range(40)):
        check_geometry(sample)
        height, width = sample.image.shape[:2]
        assert (height, width) == (sample.style["height"], sample.style["width"])
        assert abs(height * width / 96 ** 2 - 1) < 0.05 and 0.58 <= width / height <= 1.75
        shapes.append((height, width))
    square = sum(height == width for height, width in shapes)
    assert 10 <= square <= 30 and len(set(shapes)) > 10
    check_geometry(world.exemplar_sample(3))
    assert world.video(0, num_frames=2).frames.shape[1:3] == (96, 96)


def test_confusers_put_look_alike_shapes_into_shape_only_negatives():
    for rate, count in ((1.0, 120), (0.5, 200)):
        world = ConceptWorld(size=64, seed=10, variety=Variety(shape_only_negatives=0.35, shape_confusers=rate))
        negatives = shape_only = confused = 0
        for sample in map(world.sample, range(count)):
            assert classify_query(sample.concept, sample.instances) == sample.kind
            if sample.kind == "positive":
                continue
            negatives += 1
            if sample.concept.named_attributes != ("shape",):
                assert not sample.style["confusers"]
                continue
            shape_only += 1
            assert len(sample.target_indices) == 0
            assert all(obj.shape != sample.concept.shape for obj in sample.instances)
            if sample.style["confusers"]:
                confused += 1
                assert any(obj.shape in CONFUSABLE_SHAPES[sample.concept.shape] for obj in sample.instances)
        assert shape_only >= 0.3 * negatives
        assert (confused == shape_only) if rate == 1.0 else (0.3 < confused / shape_only < 0.7)
    # shape-only negatives without look-alikes: the share alone
    alone = [ConceptWorld(size=64, seed=10, variety=Variety(shape_only_negatives=0.5)).sample(i) for i in range(100)]
    negatives = [s for s in alone if s.kind != "positive"]
    assert sum(s.concept.named_attributes == ("shape",) for s in negatives) >= 0.35 * len(negatives)
    assert not any(s.style["confusers"] for s in alone)
    plain = [ConceptWorld(size=64, seed=10, variety=Variety(blur=True)).sample(i) for i in range(100)]
    assert sum(s.kind != "positive" and s.concept.named_attributes == ("shape",) for s in plain) < 0.1 * 100


def test_variety_parses_and_describes_itself():
    assert Variety.parse("none") == Variety() and Variety().describe() == "none"
    assert Variety.parse("all") == Variety.all() and Variety.all().describe() == "all"
    assert Variety.parse("all,heldout") == Variety.all(styles="heldout")
    assert Variety.parse(" Blur, jpeg ,confusers=0.3") == Variety(blur=True, jpeg=True, shape_confusers=0.3)
    assert Variety.parse("all,shapeonly=0.2") == Variety.all(shape_only_negatives=0.2)
    assert Variety.parse("heldout") == Variety(styles="heldout")
    cases = [Variety(**{factor: True}) for factor in VARIETY_FACTORS] + [
        Variety.all(shape_confusers=0.0), Variety.all("heldout", 0.1, 0.25), Variety(shape_confusers=0.1),
        Variety(shape_only_negatives=0.4), Variety(blur=True, shape_only_negatives=0.3, shape_confusers=1.0),
        Variety(outlines=True, aspect=True, styles="heldout"), Variety()]
    for variety in cases:
        assert Variety.parse(variety.describe()) == variety, variety
    for bad in ("", "blurr", "confusers=lots", "confusers=2", "shapeonly=-1", "none,blur", "styles=heldout"):
        with pytest.raises(ValueError):
            Variety.parse(bad)
    with pytest.raises(ValueError, match="styles"):
        Variety(styles="test")


def test_fixed_non_square_worlds_and_their_export(tmp_path):
    world = ConceptWorld(size=(216, 288), seed=11)
    assert (world.height, world.width, world.size) == (216, 288, (216, 288))
    for sample in (world.sample(0), world.exemplar_sample(1), world.reference_sample("star", "blue", 2)):
        assert sample.image.shape == (216, 288, 3)
        check_geometry(sample)
    assert ConceptWorld(size=(216, 288), seed=11, variety=Variety.all()).sample(4).image.ndim == 3
    with pytest.raises(ValueError, match="square"):
        world.video(0)
    with pytest.raises(ValueError, match="size"):
        ConceptWorld(size=(20, 288))
    gt_path = export_saco_image_benchmark(tmp_path, num_pairs=6, seed=11, split="train", size=(216, 288))
    gt = json.loads(gt_path.read_text())
    for entry in gt["images"]:
        assert (entry["height"], entry["width"]) == (216, 288)
        assert np.asarray(Image.open(tmp_path / "images" / entry["file_name"])).shape == (216, 288, 3)
    for annotation in gt["annotations"]:
        assert mask_utils.decode(annotation["segmentation"]).shape == (216, 288)
    gt_path = export_saco_image_benchmark(tmp_path / "aspect", num_pairs=6, seed=11, size=96,
                                          variety=Variety(aspect=True))
    for entry in json.loads(gt_path.read_text())["images"]:
        image = np.asarray(Image.open(tmp_path / "aspect" / "images" / entry["file_name"]))
        assert image.shape[:2] == (entry["height"], entry["width"])


def test_video_takes_the_drawing_factors_only():
    default = ConceptWorld(size=64, seed=12).video(1, num_frames=3)
    ignored = Variety(scale=True, aspect=True, shape_confusers=1.0)
    unchanged = ConceptWorld(size=64, seed=12, variety=ignored).video(1, num_frames=3)
    assert np.array_equal(default.frames, unchanged.frames)
    styled = ConceptWorld(size=64, seed=12, variety=Variety.all()).video(1, num_frames=3)
    assert styled.frames.shape == (3, 64, 64, 3) and not np.array_equal(styled.frames, default.frames)
    assert (styled.instance_masks.sum(axis=0) <= 1).all()
    assert classify_query(styled.concept, styled.instances) == styled.kind
