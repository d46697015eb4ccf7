"""`conceptseg predict` and `conceptseg demo` end to end on a tiny random model."""

import json
import os
import struct
import zlib

import numpy as np
import PIL.Image
import pytest
from pycocotools import mask as mask_utils

from conceptseg import SAM3, save_model, tiny_config
from conceptseg.cli import build_parser, main
from conceptseg.io.images import ImageLimits
from conceptseg.predict import cli
from conceptseg.predict.image import ImagePredictor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_model(SAM3(tiny_config()), tmp_path_factory.mktemp("model"))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (60, 80)), ("b.jpg", (100, 50))):
        PIL.Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_predict_folder_writes_coco_json_and_overlays(model_dir, images, tmp_path):
    out = tmp_path / "out"
    code = main(["predict", str(images), "--text", "red circle", "--text", "star", "--box", "5,5,30,40",
                 "--box", "40,10,60,50,neg", "--model", str(model_dir), "--threshold", "0", "--out", str(out),
                 "--save-masks"])
    assert code == 0
    records = json.loads((out / "predictions.json").read_text())
    assert {r["text"] for r in records} == {"red circle", "star"}
    assert {r["category_id"] for r in records} == {1, 2}
    first = next(r for r in records if r["file_name"].endswith("a.png"))
    assert mask_utils.decode(first["segmentation"]).shape == (60, 80)
    assert (out / "a.png").exists() and (out / "b.png").exists()
    assert len(list((out / "masks").glob("*.png"))) == len(records)


def test_exemplars_drawn_on_another_image_prompt_every_source(model_dir, images, tmp_path):
    reference = tmp_path / "reference.png"
    PIL.Image.fromarray(np.full((120, 120, 3), 200, np.uint8)).save(reference)
    out = tmp_path / "out"
    # the box lies outside both sources (80 x 60 and 50 x 100 px) but inside the reference it is drawn on
    code = main(["predict", str(images), "--exemplar-image", str(reference), "--box", "85,85,110,110",
                 "--model", str(model_dir), "--threshold", "0", "--out", str(out)])
    assert code == 0
    records = json.loads((out / "predictions.json").read_text())
    assert {r["file_name"].rsplit("/", 1)[-1] for r in records} == {"a.png", "b.jpg"}


def test_one_corrupt_image_is_reported_and_the_rest_finish(model_dir, images, tmp_path, capsys):
    (images / "c_broken.png").write_bytes(b"definitely not a png")
    out = tmp_path / "out"
    code = main(["predict", str(images / "*.png"), str(images / "b.jpg"), "--text", "cat",
                 "--model", str(model_dir), "--out", str(out)])
    assert code == 1
    assert "c_broken.png" in capsys.readouterr().err
    assert (out / "a.png").exists() and (out / "b.png").exists() and (out / "predictions.json").exists()


def write_bomb_png(path, side=30000):
    """A valid 1-bit black PNG of side x side pixels: 0.5 MB on disk, side**2 pixels decoded. (PIL writes the same
    with Image.new("1", ...).save, but allocates one byte per pixel first: 900 MB and seconds.)"""
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(1)
    data = b"".join(compressor.compress(row * 1000) for _ in range(side // 1000)) + compressor.flush()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def file_names(records):
    return {r["file_name"].rsplit("/", 1)[-1] for r in records}


def test_a_decompression_bomb_is_skipped_and_the_files_after_it_finish(model_dir, images, tmp_path, capsys):
    write_bomb_png(images / "a_bomb.png")
    with pytest.raises(PIL.Image.DecompressionBombError):  # the file really is one
        PIL.Image.open(images / "a_bomb.png")
    out = tmp_path / "out"
    code = main(["predict", str(images), "--text", "cat", "--model", str(model_dir), "--threshold", "0",
                 "--out", str(out)])
    assert code == 1
    error = capsys.readouterr().err
    assert f"skipped {images / 'a_bomb.png'}: " in error and "decompression bomb" in error
    records = json.loads((out / "predictions.json").read_text())
    assert file_names(records) == {"a.png", "b.jpg"}  # before and after the bomb
    assert (out / "a.png").exists() and (out / "b.png").exists() and not (out / "a_bomb.png").exists()


def test_image_limits_are_options_and_a_refusal_names_the_limit(model_dir, images, tmp_path, capsys):
    out = tmp_path / "out"
    # a.png is 80 x 60 = 4,800 pixels, b.jpg 50 x 100 = 5,000
    code = main(["predict", str(images), "--text", "cat", "--model", str(model_dir), "--threshold", "0",
                 "--out", str(out), "--max-image-pixels", "4900"])
    assert code == 1
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "b.jpg" in skipped[0] and "over the limit of 4,900" in skipped[0]
    assert file_names(json.loads((out / "predictions.json").read_text())) == {"a.png"}


def test_only_the_limits_given_are_passed_on_and_0_switches_one_off():
    args = build_parser().parse_args(["predict", "x.png", "--max-image-pixels", "0", "--max-image-bytes", "7"])
    assert cli.image_limits(args) == ImageLimits(max_pixels=None, max_bytes=7)
    assert cli.image_limits(build_parser().parse_args(["predict", "x.png"])) == ImageLimits()


def test_an_error_while_predicting_one_file_is_reported_with_its_type(model_dir, images, tmp_path, monkeypatch,
                                                                       capsys):
    predict_many, calls = ImagePredictor.predict_many, []

    def failing_on_the_first_image(self, *args, **kwargs):
        calls.append(None)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return predict_many(self, *args, **kwargs)

    monkeypatch.setattr(ImagePredictor, "predict_many", failing_on_the_first_image)
    out = tmp_path / "out"
    code = main(["predict", str(images), "--text", "cat", "--model", str(model_dir), "--threshold", "0",
                 "--out", str(out)])
    assert code == 1
    assert f"skipped {images / 'a.png'}: RuntimeError: out of memory" in capsys.readouterr().err
    assert file_names(json.loads((out / "predictions.json").read_text())) == {"b.jpg"}


def test_predict_help_documents_the_image_limits(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--max-image-pixels N", "--max-image-side N", "--max-image-bytes N"):
        assert option in text
    assert f"default {PIL.Image.MAX_IMAGE_PIXELS:,}" in text


def test_an_interrupted_run_leaves_valid_predictions_of_the_images_done(model_dir, images, tmp_path, monkeypatch):
    out = tmp_path / "out"
    set_image, on_disk = ImagePredictor.set_image, []

    def set_image_interrupted_at_the_second(self, image):
        on_disk.append((out / "predictions.json").read_text())  # what a run killed here (SIGKILL) would leave
        if len(on_disk) == 2:
            raise KeyboardInterrupt
        set_image(self, image)

    real_replace, replaced = os.replace, []

    def observed_replace(source, target):
        assert os.path.dirname(source) == os.path.dirname(target)
        with open(source) as file:
            replaced.append(json.load(file))  # only a complete file is ever moved into place
        real_replace(source, target)

    monkeypatch.setattr(ImagePredictor, "set_image", set_image_interrupted_at_the_second)
    monkeypatch.setattr(os, "replace", observed_replace)
    monkeypatch.setattr(cli, "CHECKPOINT_SECONDS", 0.0)  # rewrite after every image
    with pytest.raises(KeyboardInterrupt):
        main(["predict", str(images), "--text", "cat", "--model", str(model_dir), "--threshold", "0",
              "--out", str(out)])
    assert json.loads(on_disk[0]) == [] and file_names(json.loads(on_disk[1])) == {"a.png"}
    assert file_names(json.loads((out / "predictions.json").read_text())) == {"a.png"}  # also written on the way out
    assert replaced[0] == [] and file_names(replaced[-1]) == {"a.png"}
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "predictions.json"]  # no temporary file left


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["predict", "IMAGES"], "give at least one --text"),
        (["predict", "IMAGES", "--box", "1,2,3"], "expected X1,Y1,X2,Y2"),
        (["predict", "IMAGES", "--point", "a,b"], "expected X,Y"),
        (["predict", "nowhere/*.png", "--text", "cat"], "no files match"),
        (["predict", "missing.png", "--text", "cat"], "does not exist"),
        (["predict", "IMAGES", "--text", "cat", "--threshold", "2"], "--threshold"),
        (["predict", "IMAGES", "--text", "cat", "--exemplar-image", "IMAGES"], "--exemplar-image needs"),
        (["predict", "IMAGES", "--text", "cat", "--max-image-side", "-1"], "--max-image-side must be >= 0"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(images, arguments, message, capsys):
    arguments = [str(images) if a == "IMAGES" else a for a in arguments]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_demo_runs_and_says_where_outputs_are(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    assert str((tmp_path / "demo").resolve()) in printed
    for name in ("input.png", "text_prompt.png", "exemplar_prompt.png", "predictions.json"):
        assert (tmp_path / "demo" / name).exists()
