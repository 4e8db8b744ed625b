"""featmap_ros/evaluation/datasets.py via ``featmap eval object``: BOP-19 results out of the
estimator (``--bop-csv``), read back and scored by ``featmap eval bop``."""
from __future__ import annotations

import json

import pytest

from featmap_ros import cli
from featmap_ros.checkpoint import bundled_weights
from featmap_ros.data import bop
from featmap_ros.evaluation.published import read_bop_results


@pytest.fixture(scope="module")
def toy_frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    assert cli.main(["render", "object", "--toy", "--count", "3", "--domain", "real-like", "--out", str(root),
                     "--split", "test", "--seed", "3"]) == 0
    return root


def test_eval_object_writes_bop_results_that_eval_bop_scores(toy_frames, tmp_path, capsys):
    csv, out = tmp_path / "res.csv", tmp_path / "eval"
    assert cli.main(["eval", "object", "--checkpoint", str(bundled_weights("object")), "--dataset-root", str(toy_frames),
                     "--out", str(out), "--bop-csv", str(csv), "--device", "cpu", "--overlays", "1"]) == 0
    ests = read_bop_results(csv)
    metrics = json.loads((out / "object_metrics.json").read_text())
    assert len(ests) == metrics["summary"]["instances"] == 3
    assert all(e.obj_id == 1 and 0 <= e.score <= 1 and e.time_s > 0 for e in ests)
    assert sorted(e.im_id for e in ests) == [0, 1, 2]
    scenes = bop.list_scenes(toy_frames / "test")
    targets = [{"scene_id": f.scene_id, "im_id": f.im_id, "obj_id": 1, "inst_count": 1}
               for s in scenes for f in bop.read_scene(s, bop.load_models_info(toy_frames / "models" / "models_info.json"))]
    (toy_frames / "test_targets_bop19.json").write_text(json.dumps(targets))
    capsys.readouterr()
    assert cli.main(["eval", "bop", str(csv), "--dataset-root", str(toy_frames), "--dataset", "toy", "--json", str(tmp_path / "bop.json")]) == 0
    rep = json.loads((tmp_path / "bop.json").read_text())
    assert rep["estimates_evaluated"] == rep["targets"] == 3
    # the BOP scorer, reading the file, agrees with the evaluation that wrote it
    assert rep["proj_5px"] == pytest.approx(metrics["summary"]["proj2d_5px"])
    assert rep["ADD_10"] == pytest.approx(metrics["summary"]["add_10"])
    assert rep["5cm5deg"] == pytest.approx(metrics["summary"]["5cm_5deg"])
    assert 0.0 <= rep["AR_MSPD"] <= 1.0
