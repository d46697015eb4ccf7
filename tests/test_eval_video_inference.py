"""`conceptseg eval --video --frames DIR --model M`: track every pair of a VEval export, then score it."""

import dataclasses

from hf_reference import randomize_

import conceptseg
import conceptseg.cli
from conceptseg import SAM3, tiny_config
from conceptseg.data import export_veval_benchmark


def test_eval_tracks_each_pair_of_a_veval_export_and_scores_it(tmp_path, capsys):
    gt = export_veval_benchmark(tmp_path / "veval", num_videos=3, seed=4, size=64, num_frames=4)
    model = randomize_(SAM3(dataclasses.replace(tiny_config(image_size=56), d_model=64)), seed=1).eval()
    model_dir = conceptseg.save_model(model, tmp_path / "model")
    pred = tmp_path / "pred.json"
    argv = ["eval", "--gt", str(gt), "--video", "--frames", str(gt.parent / "frames"), "--model", str(model_dir),
            "--pred", str(pred)]
    assert conceptseg.cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "pHOTA" in out and "3 datapoints" in out and pred.exists()
