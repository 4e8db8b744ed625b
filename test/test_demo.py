"""Tests of ``featmap demo`` and the bundled weights (small runs; the real demo uses more frames)."""
from featmap_ros.render.renderer import preload_torch_compiler

preload_torch_compiler()  # at collection, before any test renders (Mesa then triton segfaults)

import json

import numpy as np
import pytest

from featmap_ros.cli import main
from featmap_ros.errors import InputError
from featmap_ros.estimators import HandPoseEstimator, ObjectPoseEstimator
from featmap_ros.checkpoint import WEIGHTS_DIR, bundled_weights


def test_bundled_weights_load_and_are_small():
    obj = ObjectPoseEstimator.from_checkpoint(bundled_weights("object"), device="cpu")
    assert obj.object_names == ["toy"] and obj.localiser is not None and obj.use_mapping
    hand = HandPoseEstimator.from_checkpoint(bundled_weights("hand"), device="cpu")
    assert len(hand.joint_names) == 14 and hand.use_mapping
    for p in WEIGHTS_DIR.glob("*.pt"):  # the demo's small networks; lmo.pt, lmo_synthetic_only.pt (EfficientNet-Lite0 and its localiser, float16): the 25 MB
        assert p.stat().st_size < (25 * 10**6 if p.name.startswith("lmo") else 8 * 2**20), p
    assert {"lmo.pt", "lmo_synthetic_only.pt"} <= {p.name for p in WEIGHTS_DIR.glob("*.pt")}
    with pytest.raises(InputError, match="model.task"):
        HandPoseEstimator.from_checkpoint(bundled_weights("object"), device="cpu")
    assert (WEIGHTS_DIR / "demo_object.yaml").is_file() and (WEIGHTS_DIR / "demo_hand.yaml").is_file()


def test_demo_writes_metrics_curves_and_overlays(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--object-frames", "2", "--hand-frames", "2", "--overlays", "1", "--device", "cpu"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["object"]["boxes_gt"]["instances"] == 2
    assert 0.0 <= s["object"]["boxes_gt"]["proj2d_5px"] <= 1.0
    assert np.isfinite(s["hand"]["mean_mm"]) and s["hand"]["frames"] == 2
    for f in ("object/object_curves.png", "hand/hand_curve.png"):
        assert (out / f).stat().st_size > 1000
    assert list((out / "object" / "boxes_gt" / "overlays").glob("*.png"))
    assert list((out / "hand" / "overlays").glob("*.png")) or s["hand"]["missed"] == 2
    assert str(out.resolve()) in capsys.readouterr().out
