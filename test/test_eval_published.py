"""featmap eval hands / eval bop on fixture files written here in the published formats."""
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from featmap_ros.cli import main
from featmap_ros.evaluation.published import evaluate_bop, read_bop_results
from featmap_ros.data import hand_predictions
from featmap_ros.data.specs import hand_dataset
from featmap_ros.errors import InputError


def _write_uvd(path, uvd):
    path.write_text("".join(" ".join(f"{v:.4f}" for v in f.ravel()) + " \n" for f in uvd))
    return path


def _hand_files(tmp_path, dataset="nyu", n=6, dz=10.0):
    """GT hands straight down the optical axis (u=cx, v=cy) so a depth offset is a 3D offset."""
    spec = hand_dataset(dataset)
    J = len(spec.joint_names)
    rng = np.random.default_rng(0)
    gt = np.stack([np.full((n, J), spec.cx), np.full((n, J), spec.cy), rng.uniform(500, 900, (n, J))], -1)
    pred = gt.copy()
    pred[..., 2] += dz
    return _write_uvd(tmp_path / "pred.txt", pred), _write_uvd(tmp_path / "gt.txt", gt)


# ---------------------------------------------------------------- hands

def test_eval_hands_known_error_json_and_plot(tmp_path, capsys):
    pred, gt = _hand_files(tmp_path, dz=10.0)
    out_json, out_png = tmp_path / "r" / "m.json", tmp_path / "r" / "c.png"
    assert main(["eval", "hands", str(pred), str(gt), "--dataset", "nyu", "--json", str(out_json), "--plot", str(out_png)]) == 0
    assert "10.000 mm" in capsys.readouterr().out
    r = json.loads(out_json.read_text())
    assert r["frames"] == 6 and r["mean_mm"] == pytest.approx(10.0, abs=1e-6)
    assert r["per_joint_mm"] == pytest.approx([10.0] * 14, abs=1e-6)
    assert set(r["max_frame_fraction"]) == {str(d) for d in range(0, 81, 10)}
    assert r["max_frame_fraction"]["0"] == 0.0 and r["max_frame_fraction"]["10"] == 1.0
    assert r["per_subject_mm"] == {}  # 6 frames: NYU's subject split does not apply
    assert r["gt"].endswith("gt.txt") and r["camera"]["y_up"] is True
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_nyu_y_up_convention_matters(tmp_path):
    spec = hand_dataset("nyu")
    gt = np.tile([[spec.cx, spec.cy - 58.707, 1000.0]], (2, 14, 1))
    xyz = hand_predictions.uvd_to_xyz_mm(gt, spec)
    np.testing.assert_allclose(xyz[0, 0], [0.0, 100.0, 1000.0])  # above the centre is +y for NYU


def test_eval_hands_per_subject_icvl(tmp_path):
    spec = hand_dataset("icvl")
    n, J = 1596, len(spec.joint_names)
    gt = np.stack([np.full((n, J), spec.cx), np.full((n, J), spec.cy), np.full((n, J), 600.0)], -1)
    pred = gt.copy()
    pred[:702, :, 2] += 5.0
    pred[702:, :, 2] -= 10.0
    pred_p, gt_p = _write_uvd(tmp_path / "p.txt", pred), _write_uvd(tmp_path / "g.txt", gt)
    assert main(["eval", "hands", str(pred_p), str(gt_p), "--dataset", "icvl", "--json", str(tmp_path / "o.json")]) == 0
    r = json.loads((tmp_path / "o.json").read_text())
    assert r["joints"] == 16
    assert r["per_subject_mm"] == {"test_seq_1": pytest.approx(5.0), "test_seq_2": pytest.approx(10.0)}
    assert r["mean_mm"] == pytest.approx((702 * 5 + 894 * 10) / 1596)
    assert r["max_frame_fraction"]["0"] == 0.0
    assert r["max_frame_curve"]["fraction"][5] == pytest.approx(702 / 1596)


def test_msra_has_21_joints(tmp_path):
    pred, gt = _hand_files(tmp_path, dataset="msra", n=3, dz=2.0)
    assert main(["eval", "hands", str(pred), str(gt), "--dataset", "msra"]) == 0
    assert main(["eval", "hands", str(pred), str(gt), "--dataset", "nyu"]) == 2  # 63 columns, not 42


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda lines: lines.__setitem__(2, lines[2] + " 1.0"), r"pred\.txt:3: 43 columns, expected 42"),
        (lambda lines: lines.__setitem__(3, " ".join(lines[3].split()[:-3])), r"pred\.txt:4: 39 columns"),
        (lambda lines: lines.__setitem__(1, lines[1].replace(lines[1].split()[4], "nan", 1)), r"pred\.txt:2: column \d+ .* is nan"),
        (lambda lines: lines.__setitem__(4, lines[4].replace(lines[4].split()[0], "inf", 1)), r"pred\.txt:5: column 1 .* is inf"),
        (lambda lines: lines.__setitem__(0, lines[0].replace(lines[0].split()[2], "abc", 1)), r"pred\.txt:1: column 3 is not a number"),
        (lambda lines: lines.pop(), r"pred\.txt has 5 frames but .*gt\.txt has 6"),
        (lambda lines: lines.__setitem__(2, ""), r"pred\.txt:3: empty line"),
    ],
)
def test_eval_hands_bad_input_names_file_and_line(tmp_path, capsys, edit, message):
    pred, gt = _hand_files(tmp_path)
    lines = pred.read_text().splitlines()
    edit(lines)
    pred.write_text("\n".join(lines) + "\n")
    assert main(["eval", "hands", str(pred), str(gt), "--dataset", "nyu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("featmap: error:")
    import re

    assert re.search(message, err), err


def test_eval_hands_missing_and_empty_files(tmp_path, capsys):
    pred, gt = _hand_files(tmp_path)
    assert main(["eval", "hands", str(tmp_path / "nope.txt"), str(gt), "--dataset", "nyu"]) == 2
    assert "nope.txt: file not found" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(InputError, match="no frames"):
        hand_predictions.read_uvd_file(tmp_path / "empty.txt")
    (tmp_path / "odd.txt").write_text("1 2 3 4\n")
    with pytest.raises(InputError, match=r"odd\.txt:1: 4 columns, not a multiple of 3"):
        hand_predictions.read_uvd_file(tmp_path / "odd.txt")


# ---------------------------------------------------------------- bop

BOX_MM = np.array([20.0, 10.0, 5.0])  # half extents
DIAMETER = float(2 * np.linalg.norm(BOX_MM))
K_LM = [572.4114, 0.0, 325.2611, 0.0, 573.57043, 242.04899, 0.0, 0.0, 1.0]
RZ180 = Rotation.from_euler("z", 180, degrees=True).as_matrix()


def _write_box_ply(path):
    v = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * BOX_MM
    faces = [(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1),
             (2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 5, 7), (1, 7, 3)]
    head = ["ply", "format ascii 1.0", f"element vertex {len(v)}", "property float x", "property float y",
            "property float z", f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    body = [" ".join(f"{c:g}" for c in p) for p in v] + [f"3 {a} {b} {c}" for a, b, c in faces]
    path.write_text("\n".join(head + body) + "\n")


def _bop_fixture(root):
    """A two-object BOP dataset: obj 1 (plain box) and obj 10 (eggbox id, 180-degree z symmetry)."""
    (root / "models_eval").mkdir(parents=True)
    sym = np.eye(4)
    sym[:3, :3] = RZ180
    info = {"diameter": DIAMETER, "min_x": -20.0, "min_y": -10.0, "min_z": -5.0, "size_x": 40.0, "size_y": 20.0, "size_z": 10.0}
    (root / "models_eval" / "models_info.json").write_text(json.dumps({"1": info, "10": {**info, "symmetries_discrete": [sym.ravel().tolist()]}}))
    for o in (1, 10):
        _write_box_ply(root / "models_eval" / f"obj_{o:06d}.ply")
    R0 = Rotation.from_rotvec([0.3, 0.2, 0.1]).as_matrix()
    gts = {
        0: [(1, R0, [0.0, 0.0, 500.0], 0.9), (10, R0, [60.0, 0.0, 500.0], 0.8)],
        1: [(1, R0, [0.0, 30.0, 600.0], 0.05)],
        2: [(1, R0, [10.0, 10.0, 700.0], 0.7), (10, R0, [-50.0, 0.0, 700.0], 0.6)],
    }
    scene = root / "test" / "000001"
    scene.mkdir(parents=True)
    (scene / "scene_camera.json").write_text(json.dumps({str(i): {"cam_K": K_LM, "depth_scale": 1.0} for i in gts}))
    (scene / "scene_gt.json").write_text(json.dumps({
        str(i): [{"cam_R_m2c": R.ravel().tolist(), "cam_t_m2c": t, "obj_id": o} for o, R, t, _ in g] for i, g in gts.items()
    }))
    (scene / "scene_gt_info.json").write_text(json.dumps({
        str(i): [{"bbox_obj": [1, 1, 10, 10], "bbox_visib": [1, 1, 10, 10], "px_count_all": 100, "visib_fract": v} for *_, v in g]
        for i, g in gts.items()
    }))
    (root / "test_targets_bop19.json").write_text(json.dumps([
        {"scene_id": 1, "im_id": i, "obj_id": o, "inst_count": 1} for i, g in gts.items() for o, *_ in g
    ]))
    return R0


def _csv_line(im, obj, score, R, t, time=0.5):
    return f"1,{im},{obj},{score},{' '.join(f'{x:.9f}' for x in np.ravel(R))},{' '.join(f'{x:.6f}' for x in t)},{time}"


def _results(path, R0):
    lines = ["scene_id,im_id,obj_id,score,R,t,time",
             _csv_line(0, 1, 0.9, R0, [0.0, 0.0, 500.0]),                 # exact
             _csv_line(0, 10, 0.8, R0 @ RZ180, [60.0, 0.0, 500.0]),        # rotated by its symmetry
             _csv_line(1, 1, 0.5, R0, [0.0, 30.0, 603.0], time=0.4),      # 3 mm too far
             _csv_line(2, 1, 0.9, R0, [160.0, 10.0, 700.0], time=0.3),    # wrong, higher score: the one kept
             _csv_line(2, 1, 0.2, R0, [10.0, 10.0, 700.0], time=0.3),     # right but ranked second
             _csv_line(7, 1, 0.9, R0, [0.0, 0.0, 500.0], time=0.3)]       # not a target image: ignored
    path.write_text("\n".join(lines) + "\n")
    return path


def test_eval_bop_hand_computed_scores(tmp_path, capsys):
    root = tmp_path / "ds"
    R0 = _bop_fixture(root)
    res = _results(tmp_path / "res.csv", R0)
    out = tmp_path / "scores.json"
    assert main(["eval", "bop", str(res), "--dataset-root", str(root), "--dataset", "lmo", "--json", str(out)]) == 0
    assert "AR_MSSD" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["targets"] == 5 and r["estimates"] == 6 and r["estimates_evaluated"] == 4
    # MSSD of the 3 mm error is 3 / diameter = 0.065: wrong at 0.05, right from 0.10 on
    assert 3.0 / DIAMETER == pytest.approx(0.0654, abs=1e-3)
    assert r["recalls_MSSD"]["0.05"] == pytest.approx(2 / 5)
    assert r["recalls_MSSD"]["0.10"] == pytest.approx(3 / 5)
    assert r["AR_MSSD"] == pytest.approx((2 / 5 + 9 * 3 / 5) / 10)
    assert r["AR_MSPD"] == pytest.approx(3 / 5)
    assert r["AR"] == pytest.approx((r["AR_MSSD"] + r["AR_MSPD"]) / 2)
    assert r["ADD_10"] == pytest.approx(3 / 5)  # ADD-S for obj 10 (symmetric), ADD for obj 1
    assert r["proj_5px"] == pytest.approx(2 / 5)  # like the toolkit's "proj", not symmetry-aware
    assert r["per_object"]["10"]["targets"] == 2 and r["per_object"]["10"]["AR_MSSD"] == pytest.approx(0.5)
    assert r["per_object"]["10"]["add_metric"] == "ADD-S"
    assert r["average_time_per_image_s"] == pytest.approx((0.5 + 0.4 + 0.3 + 0.3) / 4)


def test_eval_bop_visibility_threshold(tmp_path):
    root = tmp_path / "ds"
    R0 = _bop_fixture(root)
    r = evaluate_bop(_results(tmp_path / "res.csv", R0), root, "lmo", visib_gt_min=0.1)
    assert r["targets"] == 4  # image 1's instance is 5 % visible
    assert r["AR_MSSD"] == pytest.approx(2 / 4)


def test_eval_bop_gt_as_estimates_scores_one(tmp_path):
    root = tmp_path / "ds"
    R0 = _bop_fixture(root)
    gt = json.loads((root / "test" / "000001" / "scene_gt.json").read_text())
    lines = [_csv_line(int(i), g["obj_id"], 1.0, g["cam_R_m2c"], g["cam_t_m2c"]) for i, gs in gt.items() for g in gs]
    (tmp_path / "gt.csv").write_text("\n".join(lines) + "\n")  # no header: allowed
    r = evaluate_bop(tmp_path / "gt.csv", root, "lmo")
    assert (r["AR_MSSD"], r["AR_MSPD"], r["ADD_10"], r["proj_5px"], r["5cm5deg"]) == (1.0, 1.0, 1.0, 1.0, 1.0)
    del R0


@pytest.mark.parametrize(
    "line, message",
    [
        ("1,0,1,0.9,1 0 0 0 1 0 0 0 1,0 0 500", r"res\.csv:2: 6 comma-separated fields, expected 7"),
        ("1,0,1,0.9,1 0 0 0 1 0 0 0 nan,0 0 500,0.1", r"res\.csv:2: R contains NaN"),
        ("1,0,1,0.9,1 0 0 0 1 0 0 0,0 0 500,0.1", r"res\.csv:2: R has 8 values, expected 9"),
        ("1,0,x,0.9,1 0 0 0 1 0 0 0 1,0 0 500,0.1", r"res\.csv:2: obj_id is not an integer"),
        ("1,0,1,high,1 0 0 0 1 0 0 0 1,0 0 500,0.1", r"res\.csv:2: score is not a number"),
        ("1,0,1,0.9,1 0 0 0 1 0 0 0 1,0 inf 500,0.1", r"res\.csv:2: t contains NaN or inf"),
    ],
)
def test_eval_bop_bad_results_name_file_and_line(tmp_path, capsys, line, message):
    root = tmp_path / "ds"
    _bop_fixture(root)
    res = tmp_path / "res.csv"
    res.write_text("scene_id,im_id,obj_id,score,R,t,time\n" + line + "\n")
    assert main(["eval", "bop", str(res), "--dataset-root", str(root), "--dataset", "lmo"]) == 2
    import re

    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_eval_bop_inconsistent_times_and_missing_dataset(tmp_path):
    res = tmp_path / "res.csv"
    res.write_text(_csv_line(0, 1, 0.9, np.eye(3), [0, 0, 500], 0.1) + "\n" + _csv_line(0, 10, 0.9, np.eye(3), [0, 0, 500], 0.9) + "\n")
    root = tmp_path / "ds"
    _bop_fixture(root)
    with pytest.raises(InputError, match=r"res\.csv:2: time"):
        evaluate_bop(res, root, "lmo")
    with pytest.raises(InputError, match="dataset folder not found"):
        evaluate_bop(res, tmp_path / "nowhere", "lmo")
    assert len(read_bop_results(res)) == 2


def test_eval_hands_compare_adds_rows_and_curves(tmp_path, capsys):
    pred, gt = _hand_files(tmp_path, dz=10.0)
    other = _write_uvd(tmp_path / "other.txt", hand_predictions.read_uvd_file(gt) + [0.0, 0.0, 25.0])
    out = tmp_path / "m.json"
    rc = main(["eval", "hands", str(pred), str(gt), "--dataset", "nyu", "--compare", str(other), "--json", str(out), "--plot", str(tmp_path / "c.png")])
    assert rc == 0
    assert "other.txt: mean 25.000 mm, 0.0% of frames within 20 mm" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["mean_mm"] == pytest.approx(10.0, abs=1e-6)
    assert r["compare"][0]["mean_mm"] == pytest.approx(25.0, abs=1e-6)
    assert (tmp_path / "c.png").stat().st_size > 1000
