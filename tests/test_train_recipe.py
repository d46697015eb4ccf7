"""tools/train_embedded.py: the embedded model's recipe chains its stages and goes on after an interruption."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conceptseg import load_model

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stage", ["all", "robust", "tracker"])
def test_each_stage_starts_from_an_earlier_stage_and_draws_its_own_data(tmp_path, stage):
    recipe = load_tool("train_embedded").recipe(tmp_path, stage)
    calibration_seed = load_tool("calibrate_scores").CALIBRATION_SEED
    written: set[Path] = set()  # what earlier stages wrote: runs, their EMA models and exports
    seeds = []
    for _, arguments in recipe:
        options = dict(zip(arguments, arguments[1:]))
        if "--init" in options:
            assert Path(options["--init"]) in written, options["--init"]
        if "--seed" in options:
            seeds.append(int(options["--seed"]))
        if "--out" in options:
            written |= {Path(options["--out"]), Path(options["--out"]) / "model"}
    assert len(set(seeds)) == len(seeds) and calibration_seed not in seeds


TRAINING_COMMANDS = {
    "train": ["--config", "tiny", "--eval-pairs", "0", "--eval-exemplar-pairs", "0"],
    "train-tracker": ["--frames", "1", "--mask-fraction", "0", "--eval-clips", "0"],
}


@pytest.mark.parametrize("command", TRAINING_COMMANDS)
def test_finished_stages_are_skipped_and_an_unfinished_run_resumes(tmp_path, command):
    run_stages = load_tool("train_embedded").run_stages
    out = tmp_path / "run"
    train = ["-m", "conceptseg.cli", command, "--out", str(out), *TRAINING_COMMANDS[command], "--world-size", "64",
             "--steps", "2", "--batch-size", "2", "--warmup-steps", "1", "--save-every", "5", "--no-progress"]
    fail = ["-c", "raise SystemExit(1)"]
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}

    with pytest.raises(subprocess.CalledProcessError):
        run_stages([("first", [*train, "--until", "1"]), ("broken", fail)], tmp_path, env)
    # "first" finished (and is skipped though its command would fail now); "second" resumes its run
    run_stages([("first", fail), ("second", train)], tmp_path, env)

    stages = [json.loads(line)["stage"] for line in (tmp_path / "stages.jsonl").read_text().splitlines()]
    assert stages == ["first", "second"]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]


def test_the_robust_stage_starts_from_the_model_shipped_at_its_commit(tmp_path):
    tool = load_tool("train_embedded")
    subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "shipped_model.py"), tool.RUN27_COMMIT, "--out",
                    str(tmp_path / "start")], check=True, capture_output=True)
    shipped = subprocess.run(["git", "-C", str(REPO_ROOT), "show",
                              f"{tool.RUN27_COMMIT}:conceptseg/assets/embedded/model.safetensors"],
                             check=True, capture_output=True).stdout
    assert (tmp_path / "start" / "model.safetensors").read_bytes() == shipped
    assert load_model(tmp_path / "start").config.vit.image_size > 0
    failed = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "shipped_model.py"), "0" * 40, "--out",
                             str(tmp_path / "none")], capture_output=True, text=True)
    assert failed.returncode != 0 and "git history" in failed.stderr


def test_the_export_keeps_a_trained_tracker_unless_told_to_drop_it(tmp_path):
    from conceptseg import SAM3, save_model, tiny_config

    trained = SAM3(tiny_config())  # counts its tracker as present, as `conceptseg train-tracker` leaves it
    save_model(trained, tmp_path / "trained")
    export = [sys.executable, str(REPO_ROOT / "tools" / "export_embedded.py"), str(tmp_path / "trained")]
    subprocess.run([*export, "--out", str(tmp_path / "kept")], check=True, capture_output=True)
    subprocess.run([*export, "--out", str(tmp_path / "dropped"), "--drop-tracker"], check=True, capture_output=True)
    kept, dropped = load_model(tmp_path / "kept"), load_model(tmp_path / "dropped")
    assert "tracker" not in kept.missing_components and "tracker" in dropped.missing_components
    weight = "tracker.sam_mask_decoder.iou_prediction_head.layers.0.weight"
    expected = trained.state_dict()[weight].half().float()
    assert kept.state_dict()[weight].equal(expected) and not dropped.state_dict()[weight].equal(expected)
