"""featmap_ros.evaluation.refine_bench and ``featmap bench refine|tracking``: hand-computed jitter
and lag, and the commands on a five-frame real-like sequence."""
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from featmap_ros.cli import main
from featmap_ros.data.specs import object_dataset
from featmap_ros.errors import InputError
from featmap_ros.evaluation.refine_bench import jitter, lag_frames, lag_frames_rot, read_sequence
from featmap_ros.render.real_like import SequenceConfig, write_object_sequence
from featmap_ros.render.toy_object import make_toy_object


def rot_z(deg):
    return Rotation.from_euler("z", deg, degrees=True).as_matrix()


def test_jitter_by_hand():
    t = np.array([[0, 0, 0.5], [0.002, 0, 0.5], [0, 0, 0.5], [-0.002, 0, 0.5], [9, 9, 9]])
    R = np.stack([rot_z(a) for a in (1, -1, 1, -1, 50)])
    mm, deg, n = jitter(t, R, [(0, 3)])
    assert mm == pytest.approx(np.sqrt(2.0)) and deg == pytest.approx(1.0, abs=1e-6) and n == 4
    mm, deg, n = jitter(t, R, [(0, 3)], skip=1)  # frames 1-3: x = 2, 0, -2 mm about their mean 0
    assert n == 3 and mm == pytest.approx(np.sqrt(8.0 / 3.0)) and deg == pytest.approx(np.sqrt(1.0 - 1.0 / 9.0), rel=1e-3)
    t[1] = np.nan  # no pose in frame 1: left out
    assert jitter(t, R, [(0, 3)])[2] == 3
    assert np.isnan(jitter(t, R, [(4, 4)])[0])  # one frame: nothing to measure


def test_lag_by_hand():
    n = 30
    truth = np.zeros((n, 3))
    truth[:, 0] = 0.004 * np.arange(n)  # 4 mm per frame along x
    moving = np.ones(n, bool)
    late = np.vstack([truth[:2], truth[:-2]])  # two frames behind
    assert lag_frames(late, truth, moving) == pytest.approx(2.0, abs=0.15)  # the first frames are not yet late
    bias = late + np.array([0.0, 0.01, 0.02])  # an error across the motion is no lag
    assert lag_frames(bias, truth, moving) == pytest.approx(lag_frames(late, truth, moving))
    assert np.isnan(lag_frames(late, truth, np.zeros(n, bool)))
    R = np.stack([rot_z(2.0 * i) for i in range(n)])
    R_late = np.concatenate([R[:1], R[:-1]])
    assert lag_frames_rot(R_late, R, moving) == pytest.approx(1.0, abs=0.05)
    assert lag_frames_rot(R, R, moving) == pytest.approx(0.0, abs=1e-9)


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "seq"
    mesh, info = make_toy_object(1)
    write_object_sequence(root, mesh, info, 5, spec=object_dataset("lm"), seed=1, progress=False,
                          sequence=SequenceConfig(fps=5.0, rest_s=(0.4, 0.4), move_s=(0.4, 0.4)))
    return root


def test_bench_refine_on_rgbd_frames(sequence, tmp_path, capsys):
    out = tmp_path / "refine.json"
    assert main(["bench", "refine", "--data", str(sequence), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for k in ("add10_rgb", "add10_depth", "median_trans_mm_rgb", "median_trans_mm_depth", "added_ms_per_object"):
        assert isinstance(r[k], float), k
    assert r["instances"] == 5 and r["frames"] == 5
    assert r["median_trans_mm_depth"] <= r["median_trans_mm_rgb"] and r["add10_depth"] >= r["add10_rgb"]
    assert r["refined_fraction"] > 0 and sum(r["rejections"].values()) == round(5 * (1 - r["refined_fraction"]))
    assert 0 < r["added_ms_per_object"] < 1000
    assert "colour + depth" in capsys.readouterr().out


def test_bench_tracking_on_a_sequence(sequence, tmp_path, capsys):
    out = tmp_path / "tracking.json"
    assert main(["bench", "tracking", "--data", str(sequence), "--settle-s", "0", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for k in ("jitter_mm_raw", "jitter_mm_filtered", "jitter_deg_raw", "jitter_deg_filtered", "lag_frames"):
        assert isinstance(r[k], float), k
    assert r["source"] == "depth" and r["jitter_mm_raw"] == r["depth"]["jitter_mm_raw"]
    assert r["rest_periods"] == [[0, 1], [4, 4]] and r["depth"]["rest_frames_used"] == 2
    assert r["jitter_mm_filtered"] <= r["jitter_mm_raw"]  # the second rest frame is pulled towards the first (or reset)
    assert np.isfinite(r["lag_frames"])
    # both filters on the same per-frame poses; the Kalman filter's at the top level
    assert set(r["filters"]) == {"kalman", "one_euro"} and r["filter_config"]["kind"] == "kalman"
    assert r["filters"]["kalman"]["depth"]["jitter_mm_raw"] == r["filters"]["one_euro"]["depth"]["jitter_mm_raw"]
    assert r["jitter_mm_filtered"] == r["filters"]["kalman"]["depth"]["jitter_mm_filtered"]
    for k in ("motion_rms_mm_raw", "motion_rms_mm_filtered", "motion_rms_deg_filtered"):
        assert isinstance(r[k], float), k
    cov = r["coverage_2sigma_filtered"]
    assert cov["n"] == 5 and 0.0 <= cov["joint"] <= 1.0 and len(cov["per_axis"]) == 6
    out = capsys.readouterr().out
    assert "colour + depth" in out and "one_euro" in out and "2-sigma bound" in out


def test_bench_bad_input_is_named(sequence, tmp_path, capsys):
    assert main(["bench", "tracking", "--data", str(tmp_path), "--json", str(tmp_path / "x.json")]) == 2
    assert "sequence.json: not found" in capsys.readouterr().err
    assert main(["bench", "refine", "--frames", "0"]) == 2
    assert "--frames must be positive" in capsys.readouterr().err
    assert main(["bench", "tracking", "--rest-s", "2", "1"]) == 2
    assert "--rest-s" in capsys.readouterr().err
    (tmp_path / "sequence.json").write_text("{}")
    with pytest.raises(InputError, match="sequence.json: malformed"):
        read_sequence(tmp_path)


def test_bench_refine_renders_its_own_frames(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["bench", "refine", "--frames", "1", "--out", str(tmp_path / "data"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["frames"] == 1 and r["seed"] == 31337 and (tmp_path / "data" / "test" / "000001" / "depth").is_dir()
