"""featmap_ros/evaluation/real_splits.py (``featmap bench real-splits``): folds of real frames,
variant configs, instance pairing and seed averaging, the bench end to end on a few toy frames,
and the bad inputs it and stage 2 meet (a frame without its image, a models folder without the
object's mesh, a data set without the checkpoint's object)."""
from featmap_ros.render.renderer import preload_torch_compiler

preload_torch_compiler()  # at collection, before any test renders (Mesa then triton segfaults)

import json
import math
import shutil

import numpy as np
import pytest

from featmap_ros import cli
from featmap_ros.config import from_dict, to_dict
from featmap_ros.errors import InputError
from featmap_ros.evaluation import real_splits as rs
from featmap_ros.training.config import TrainConfig

TINY = ["data.synthetic_count=8", "steps_stage1=2", "steps_stage2=2", "localiser_steps=0", "batch_size=4",
        "pair_batch_size=2", "tensorboard=false", "checkpoint_every=0"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Four toy real-like frames (im 0..3, scene 1, obj 1) with BOP-19 targets, and a stage-1 checkpoint."""
    root = tmp_path_factory.mktemp("toy")
    data = root / "frames"
    assert cli.main(["render", "object", "--toy", "--count", "4", "--domain", "real-like", "--out", str(data), "--split", "test", "--seed", "3"]) == 0
    (data / "test_targets_bop19.json").write_text(json.dumps([{"scene_id": 1, "im_id": i, "obj_id": 1, "inst_count": 1} for i in range(4)]))
    s1 = root / "stage1"
    assert cli.main(["train", "object", "--config", "config/demo_object.yaml", "--out", str(s1), "--stop-after", "2", "--device", "cpu",
                     f"data.cache_dir={root / 'cache'}"] + TINY) == 0
    return {"data": data, "stage1": s1 / "last.pt", "cache": root / "cache"}


def test_folds_hold_out_every_other_frame():
    assert rs.parse_id_list(" 3, 8,17", "f") == [3, 8, 17]
    for bad in ("3,x", "3,3", ""):
        with pytest.raises(InputError, match="--folds"):
            rs.parse_id_list(bad, "--folds[0]")
    folds = rs.make_folds([[8, 3], [17]], [3, 8, 17, 27])
    assert folds == [rs.Fold((3, 8), (17, 27)), rs.Fold((17,), (3, 8, 27))]
    with pytest.raises(InputError, match=r"--folds\[1\]: image id\(s\) \[99\]"):
        rs.make_folds([[3], [99]], [3, 8])
    with pytest.raises(InputError, match="nothing is left"):
        rs.make_folds([[3, 8]], [3, 8])


def _viewpoint_scene(root, yaws_deg):
    """A BOP test split whose frame i sees two objects from a camera turned ``yaws_deg[i]`` about
    the vertical (and object 2 moved in frame 0: the median over objects must ignore it)."""
    import cv2
    from scipy.spatial.transform import Rotation

    sdir = root / "test" / "000001"
    (sdir / "rgb").mkdir(parents=True)
    cam, gt = {}, {}
    for i, yaw in enumerate(yaws_deg):
        Rc = Rotation.from_euler("y", yaw, degrees=True).as_matrix()
        insts = []
        for oid, R0 in ((1, np.eye(3)), (2, Rotation.from_euler("x", 30, degrees=True).as_matrix()), (3, np.eye(3))):
            R = Rc @ R0 if not (oid == 2 and i == 0) else Rotation.from_euler("z", 90, degrees=True).as_matrix()
            insts.append({"cam_R_m2c": R.reshape(-1).tolist(), "cam_t_m2c": [0.0, 0.0, 800.0], "obj_id": oid})
        gt[str(i)] = insts
        cam[str(i)] = {"cam_K": [572.4, 0, 325.3, 0, 573.6, 242.0, 0, 0, 1], "depth_scale": 1.0}
        cv2.imwrite(str(sdir / "rgb" / f"{i:06d}.png"), np.zeros((8, 8, 3), np.uint8))
    (sdir / "scene_camera.json").write_text(json.dumps(cam))
    (sdir / "scene_gt.json").write_text(json.dumps(gt))
    return root


def test_viewpoint_folds_hold_out_groups_far_from_their_training_frames(tmp_path):
    root = _viewpoint_scene(tmp_path, [0, 5, 10, 60, 65, 120, 125])
    A = rs.viewpoint_angles_deg(root, "test", [0, 2, 3])
    assert A == pytest.approx(np.array([[0, 10, 60], [10, 0, 50], [60, 50, 0]]), abs=1e-6)  # object 2 of frame 0 ignored
    folds = rs.viewpoint_folds(root, "test", 3, 30.0)
    assert folds == [rs.Fold((3, 4, 5, 6), (0, 1, 2)), rs.Fold((0, 1, 2, 5, 6), (3, 4)), rs.Fold((0, 1, 2, 3, 4), (5, 6))]
    assert rs.fold_gaps_deg(root, "test", folds) == pytest.approx([50.0, 50.0, 55.0])
    # a larger gap drops the frames in between: frame 3 (60 deg) is 50 deg from frame 2
    assert rs.viewpoint_folds(root, "test", 3, 55.0)[0] == rs.Fold((4, 5, 6), (0, 1, 2))
    with pytest.raises(InputError, match=r"--min-gap-deg 60.0: no frame is that far from held-out frames \[3, 4\]"):
        rs.viewpoint_folds(root, "test", 3, 60.0)
    with pytest.raises(InputError, match="--n-folds"):
        rs.viewpoint_folds(root, "test", 1, 30.0)


def test_variant_configs_are_valid_and_differ_only_in_the_real_frames():
    fold = rs.Fold((3, 8), (17,))
    base = to_dict(TrainConfig())
    cfgs = {v: from_dict(TrainConfig, rs.apply_overrides(base, rs.variant_overrides(v, "/lmo", "test", fold, 2, 0), ["steps_stage2=7"]))
            for v in rs.VARIANTS}
    assert cfgs["synthetic_only"].data.real_root == "" and not cfgs["synthetic_only"].mapping
    assert cfgs["no_mapping"].data.real_root == "/lmo" and cfgs["no_mapping"].data.real_im_ids == [3, 8] and not cfgs["no_mapping"].mapping
    assert cfgs["mapping"].mapping and cfgs["mapping"].data.real_im_ids == [3, 8]
    assert all(c.seed == 2 and c.data.render_seed == 0 and c.steps_stage2 == 7 and c.localiser_steps == 0 for c in cfgs.values())
    assert rs.run_name(0, 2, "synthetic_only") == rs.run_name(1, 2, "synthetic_only") != rs.run_name(0, 2, "mapping")
    with pytest.raises(InputError, match="not a section"):
        rs.apply_overrides(base, {"seed.x": 1})
    with pytest.raises(InputError, match="variant"):
        rs.variant_overrides("both", "/lmo", "test", fold, 0, 0)


def _inst(im, obj, proj, corner=5.0, ar=0.5):
    return {"scene_id": 2, "im_id": im, "obj_id": obj, "object": f"o{obj}", "proj2d_px": proj, "add_frac": 0.05 if proj < 5 else 0.5,
            "corner_px": corner, "found": math.isfinite(corner), "mspd_px": 1.0, "mssd_frac": 1.0, "ar_mspd": ar, "ar_mssd": ar / 2}


def test_comparison_pairs_instances_averages_seeds_and_uses_common_runs():
    res = {
        (0, 0, "mapping"): [_inst(3, 1, 2.0), _inst(3, 5, 9.0, corner=math.inf, ar=0.0)],
        (0, 1, "mapping"): [_inst(3, 1, 9.0), _inst(3, 5, 2.0, corner=3.0)],
        (1, 0, "mapping"): [_inst(8, 1, 2.0)],
        (0, 0, "no_mapping"): [_inst(3, 1, 9.0), _inst(3, 5, 9.0, corner=7.0)],
        (1, 0, "no_mapping"): [_inst(8, 1, 9.0)],
    }
    c = rs.compare(res, "mapping", "no_mapping", "proj2d_5px", n_boot=500)
    # seed 1 of mapping has no no_mapping partner: only (fold, seed) runs both have are compared
    assert c["runs"] == [(0, 0), (1, 0)] and c["items"] == 3
    assert c["mean_a"] == pytest.approx(2 / 3) and c["mean_b"] == 0.0 and c["difference"] == pytest.approx(2 / 3)
    assert c["ci95"][0] <= c["difference"] <= c["ci95"][1]
    # an instance without an estimate has no corner error: it leaves the corner comparison
    assert rs.compare(res, "mapping", "no_mapping", "corner_px")["items"] == 2
    # seeds are averaged per instance
    items = rs.paired_items(res, "mapping", "proj2d_5px")
    assert items[(0, 2, 3, 1, "o1")] == 0.5 and items[(0, 2, 3, 5, "o5")] == 0.5 and items[(1, 2, 8, 1, "o1")] == 1.0
    agg = rs.aggregate(res, ["no_mapping", "mapping"])
    assert agg["variants"]["mapping"]["pooled"]["instances"] == 5 and agg["variants"]["mapping"]["seeds"] == [0, 1]
    assert agg["variants"]["mapping"]["pooled"]["corner_px"] == pytest.approx((5 + 5 + 3 + 5) / 4)
    assert {(x["a"], x["b"]) for x in agg["comparisons"]} == {("mapping", "no_mapping")}
    assert "mapping - no_mapping" in rs.format_markdown({"folds": [], "seeds": [0], "stage1": "s", "runs": [
        {"variant": v, "train_seconds": 1.0, "bop": None} for v in ("mapping", "no_mapping")], **agg})


def test_bench_end_to_end_on_toy_frames_and_resume(toy, tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "r.json"
    args = ["bench", "real-splits", "--stage1", str(toy["stage1"]), "--dataset-root", str(toy["data"]), "--folds", "0,1", "2,3",
            "--work", str(work), "--json", str(out)]
    assert cli.main(args) == 0
    rep = json.loads(out.read_text())
    assert rep["folds"] == [{"train": [0, 1], "test": [2, 3]}, {"train": [2, 3], "test": [0, 1]}]
    assert sorted(p.name for p in work.iterdir()) == ["fold0_seed0_mapping", "fold0_seed0_no_mapping", "fold1_seed0_mapping",
                                                       "fold1_seed0_no_mapping", "seed0_synthetic_only"]
    for v in rs.VARIANTS:  # every frame is held out once: 4 instances per variant
        assert rep["variants"][v]["pooled"]["instances"] == 4
    for r in rep["runs"]:  # the per-instance recalls average to the BOP scorer's AR on the held-out targets
        assert r["bop"]["targets"] == 2
        assert r["summary"]["ar_mspd"] == pytest.approx(r["bop"]["AR_MSPD"]) and r["summary"]["ar_mssd"] == pytest.approx(r["bop"]["AR_MSSD"])
    res = json.loads((work / "fold0_seed0_mapping" / "result_fold0.json").read_text())
    assert sorted({i["im_id"] for i in res["instances"]}) == [2, 3] and res["train_frames"] == [0, 1]
    ck = __import__("torch").load(work / "fold0_seed0_mapping" / "last.pt", map_location="cpu", weights_only=False)
    assert ck["step"] == 4 and ck["config"]["data"]["real_im_ids"] == [0, 1] and ck["config"]["mapping"]
    assert "| mapping | 2 | 4 |" in capsys.readouterr().out
    # run again: nothing is trained or scored again, the same report comes out
    mtimes = {p: p.stat().st_mtime_ns for p in work.rglob("*")}
    assert cli.main(args) == 0
    assert json.loads(out.read_text())["comparisons"] == rep["comparisons"]
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*")} == mtimes


def test_bench_refuses_a_checkpoint_past_stage1(toy, tmp_path, capsys):
    done = tmp_path / "done.pt"
    shutil.copyfile(toy["stage1"], done)
    ck = __import__("torch").load(done, map_location="cpu", weights_only=False)
    ck["step"] = 4
    __import__("torch").save(ck, done)
    assert cli.main(["bench", "real-splits", "--stage1", str(done), "--dataset-root", str(toy["data"]), "--folds", "0,1",
                     "--work", str(tmp_path / "w")]) == 2
    assert "not the end of stage 1" in capsys.readouterr().err


def test_a_frame_without_its_image_names_the_file(toy, tmp_path, capsys):
    data = tmp_path / "frames"
    shutil.copytree(toy["data"], data)
    (data / "test" / "000001" / "rgb" / "000002.png").unlink()
    # stage 2 asked for the frame: the error names the missing image
    assert cli.main(["train", "object", "--config", "config/demo_object.yaml", "--out", str(tmp_path / "o"), "--device", "cpu", f"data.real_root={data}",
                     "data.real_split=test", "data.real_im_ids=[1,2]", f"data.cache_dir={toy['cache']}"] + TINY) == 2
    err = capsys.readouterr().err
    assert "data.real_im_ids: im_id 2 has no image" in err and "000001/rgb/000002.png" in err
    assert cli.main(["train", "object", "--config", "config/demo_object.yaml", "--out", str(tmp_path / "o"), "--device", "cpu", f"data.real_root={data}",
                     "data.real_split=test", "data.real_im_ids=[1,7]", f"data.cache_dir={toy['cache']}"] + TINY) == 2
    assert "im_id 7 is not a frame of" in capsys.readouterr().err
    # the bench: a fold naming it, or scoring it
    assert cli.main(["bench", "real-splits", "--stage1", str(toy["stage1"]), "--dataset-root", str(data), "--folds", "0,2",
                     "--work", str(tmp_path / "w")]) == 2
    assert "[2] are not frames with an image" in capsys.readouterr().err
    from featmap_ros.estimators import ObjectPoseEstimator

    est = ObjectPoseEstimator.from_checkpoint(toy["stage1"], device="cpu")
    with pytest.raises(InputError, match=r"000001/rgb/000002\.png: image of im_id 2 not found"):
        rs.score_frames(est, data, "test", [1, 2], progress=False)
    # featmap eval object --im-ids: the same
    assert cli.main(["eval", "object", "--checkpoint", str(toy["stage1"]), "--dataset-root", str(data), "--out", str(tmp_path / "e"),
                     "--device", "cpu", "--im-ids", "1,2"]) == 2
    assert "000001/rgb/000002.png: image of im_id 2 not found" in capsys.readouterr().err
    assert cli.main(["eval", "object", "--checkpoint", str(toy["stage1"]), "--dataset-root", str(data), "--out", str(tmp_path / "e"),
                     "--device", "cpu", "--im-ids", "1,9"]) == 2
    assert "image id(s) [9] are not in" in capsys.readouterr().err


def test_eval_object_im_ids_scores_what_the_bench_scores(toy, tmp_path):
    from featmap_ros.estimators import ObjectPoseEstimator

    out = tmp_path / "e"
    assert cli.main(["eval", "object", "--checkpoint", str(toy["stage1"]), "--dataset-root", str(toy["data"]), "--out", str(out),
                     "--device", "cpu", "--im-ids", "2,3", "--overlays", "0"]) == 0
    rep = json.loads((out / "object_metrics.json").read_text())
    est = ObjectPoseEstimator.from_checkpoint(toy["stage1"], device="cpu")
    mine = rs.summarise(rs.score_frames(est, toy["data"], "test", [2, 3], progress=False)[0])
    assert rep["im_ids"] == [2, 3] and rep["summary"]["instances"] == mine["instances"] == 2
    assert rep["summary"]["proj2d_5px"] == mine["proj2d_5px"] and rep["summary"]["add_10"] == mine["add_10"]
    assert rep["summary"]["mean_corner_px"] == pytest.approx(mine["corner_px"])


def test_a_models_folder_without_the_objects_mesh_names_the_file(toy, tmp_path, capsys):
    data = tmp_path / "frames"
    shutil.copytree(toy["data"], data)
    (data / "models" / "obj_000001.ply").unlink()
    assert cli.main(["train", "object", "--config", "config/demo_object.yaml", "--out", str(tmp_path / "o"), "--device", "cpu",
                     f"data.models_root={data / 'models'}", f"data.cache_dir={tmp_path / 'c'}"] + TINY) == 2
    assert "obj_000001.ply not found" in capsys.readouterr().err
    assert cli.main(["eval", "object", "--checkpoint", str(toy["stage1"]), "--dataset-root", str(data), "--out", str(tmp_path / "e"),
                     "--device", "cpu"]) == 2
    assert "obj_000001.ply: mesh file not found" in capsys.readouterr().err
    from featmap_ros.estimators import ObjectPoseEstimator

    est = ObjectPoseEstimator.from_checkpoint(toy["stage1"], device="cpu")
    with pytest.raises(InputError, match="obj_000001.ply: mesh file not found"):
        rs.score_frames(est, data, "test", [0], progress=False)


def test_a_dataset_without_the_checkpoints_object_is_refused(toy, tmp_path):
    from featmap_ros.estimators import ObjectPoseEstimator

    data = tmp_path / "frames"
    shutil.copytree(toy["data"], data)
    info = json.loads((data / "models" / "models_info.json").read_text())
    (data / "models" / "models_info.json").write_text(json.dumps({"7": info["1"]}))
    est = ObjectPoseEstimator.from_checkpoint(toy["stage1"], device="cpu")
    with pytest.raises(InputError, match="no entry for obj_id 1 of the checkpoint"):
        rs.score_frames(est, data, "test", [0], progress=False)
    # and a checkpoint asked for an object it does not know, by the estimator
    img = np.zeros((480, 640, 3), np.uint8)
    from featmap_ros import crops

    with pytest.raises(InputError, match="unknown object 'ape'; this model knows"):
        est.estimate(img, np.array([[572.0, 0, 320], [0, 573.0, 240], [0, 0, 1]]), [("ape", crops.Window(320.0, 240.0, 100.0))])


def _write_run(work, fold, seed, variant, train, test, inst):
    d = work / rs.run_name(fold, seed, variant)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"result_fold{fold}.json").write_text(json.dumps({
        "fold": fold, "seed": seed, "variant": variant, "train_frames": train, "test_frames": test, "train_seconds": 1.0,
        "summary": rs.summarise(inst), "bop": None, "instances": inst}))


def test_compare_works_pairs_one_variant_across_benches(tmp_path, capsys):
    a, b = tmp_path / "lite0", tmp_path / "small"
    _write_run(a, 0, 0, "mapping", [3], [8], [_inst(8, 1, 2.0, corner=4.0), _inst(8, 5, 2.0, corner=4.0)])
    _write_run(a, 1, 0, "mapping", [8], [3], [_inst(3, 1, 9.0, corner=8.0)])
    _write_run(b, 0, 0, "mapping", [3], [8], [_inst(8, 1, 9.0, corner=10.0), _inst(8, 5, 9.0, corner=12.0)])
    _write_run(b, 1, 0, "mapping", [8], [3], [_inst(3, 1, 9.0, corner=9.0)])
    _write_run(b, 0, 0, "no_mapping", [3], [8], [_inst(8, 1, 2.0)])  # another variant: not mixed in
    rep = rs.compare_works({"lite0": a, "small": b}, "mapping")
    assert rep["variants"]["small"]["pooled"]["instances"] == 3
    corner = next(c for c in rep["comparisons"] if c["metric"] == "corner_px")
    assert (corner["a"], corner["b"], corner["items"]) == ("small", "lite0", 3)
    assert corner["difference"] == pytest.approx(((10 - 4) + (12 - 4) + (9 - 8)) / 3)
    assert cli.main(["bench", "real-splits-compare", "--works", f"lite0={a}", f"small={b}"]) == 0
    assert "small - lite0" in capsys.readouterr().out
    with pytest.raises(InputError, match="no finished 'synthetic_only' run"):
        rs.compare_works({"lite0": a, "small": b}, "synthetic_only")
    _write_run(tmp_path / "other", 0, 0, "mapping", [17], [8], [_inst(8, 1, 2.0)])
    with pytest.raises(InputError, match="fold 0 trains on"):
        rs.compare_works({"lite0": a, "other": tmp_path / "other"}, "mapping")
    capsys.readouterr()
    assert cli.main(["bench", "real-splits-compare", "--works", str(a)]) == 2
    assert "LABEL=WORK" in capsys.readouterr().err
