"""`conceptseg predict` and `conceptseg demo` end to end on a tiny random model."""

import json

import numpy as np
import PIL.Image
import pytest
from pycocotools import mask as mask_utils

from conceptseg import SAM3, save_model, tiny_config
from conceptseg.cli import main


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
