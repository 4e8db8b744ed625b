"""featmap_ros/data/player.py: BOP/NYU frame sources, range/loop/stamps, pacing.

The fixture builders here (``make_bop``, ``make_nyu``) write tiny datasets in the exact on-disk
formats with the project's own writers; test_bag/test_online_eval/test_reliability reuse them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featmap_ros import geometry
from featmap_ros.data import player
from featmap_ros.data import bop, nyu
from featmap_ros.errors import InputError
from featmap_ros.ros.params import PLAYER_NODE_PARAMS

K_SMALL = np.array([[60.0, 0.0, 32.0], [0.0, 61.0, 24.0], [0.0, 0.0, 1.0]])


def make_bop(root, n=4, w=64, h=48, obj_ids=(1, 10), scenes=(1,), seed=0) -> Path:
    """A BOP dataset: box meshes (obj 10 = eggbox, symmetric), random images, known poses."""
    import trimesh

    rng = np.random.default_rng(seed)
    meshes, infos = {}, {}
    for k, oid in enumerate(obj_ids):
        b = trimesh.creation.box(extents=[0.05 + 0.01 * k, 0.04, 0.03])
        m = bop.Mesh(np.asarray(b.vertices, float), np.asarray(b.faces, np.int64), None, f"box{oid}")
        meshes[oid] = m
        infos[oid] = bop.model_info_from_mesh(oid, m, [np.diag([-1.0, -1.0, 1.0, 1.0])] if oid == 10 else [])
    with bop.BopWriter(root, split="test") as wr:
        wr.write_models(meshes, infos)
        for s in scenes:
            for i in range(n):
                inst = []
                for k, oid in enumerate(obj_ids):
                    R = geometry.look_at_R_m2c(rng.normal(size=3) + np.array([0, 0, 2.0]), rng.uniform(-1, 1))
                    t = np.array([0.06 * k - 0.03, rng.uniform(-0.02, 0.02), rng.uniform(0.5, 0.7)])
                    uv = geometry.project_points(t[None], K_SMALL)[0]
                    box = (int(uv[0]) - 8, int(uv[1]) - 8, 16, 16)
                    inst.append(bop.GtInstance(oid, R, t, bbox_obj=box, bbox_visib=box, px_count_all=256, visib_fract=1.0))
                depth = rng.uniform(0.4, 0.9, (h, w))
                depth[0, 0] = 0.0
                wr.add_frame(s, i, K_SMALL, inst, rgb=rng.integers(0, 255, (h, w, 3), dtype=np.uint8), depth_m=depth)
    return Path(root)


def make_nyu(root, n=5, w=64, h=48, seed=0, split="test") -> Path:
    """An NYU-layout split: random hands (36 joints) about 0.6 m away, random depth maps."""
    rng = np.random.default_rng(seed)
    J = rng.normal(0.0, 0.04, (n, 36, 3)) + np.array([0.0, 0.0, 0.6])
    depth = [rng.integers(300, 1200, (h, w)).astype(np.float32) for _ in range(n)]
    for d in depth:
        d[0, :3] = 0.0
    synth = [np.where(d > 0, d + 5.0, 0.0).astype(np.float32) for d in depth]
    nyu.write_nyu_split(Path(root) / split, J, depth, synth)
    return Path(root)


def test_bop_source_frames_match_the_files(tmp_path):
    root = make_bop(tmp_path / "lm", n=3, scenes=(1, 2))
    src = player.BopSource(root)
    assert len(src) == 6
    fr = src.frame(4)  # scene 2, im 1
    assert fr.key == "scene 000002 im 000001" and fr.frame_id == player.COLOUR_FRAME
    scene = bop.read_scene(root / "test" / "000002")
    assert np.array_equal(fr.rgb, bop.load_rgb(scene[1].rgb_path))
    raw = bop.load_depth_m(scene[1].depth_path, 1.0)
    assert fr.depth_mm.dtype == np.uint16 and np.array_equal(fr.depth_mm, np.round(raw * 1000).astype(np.uint16))
    assert fr.depth_mm[0, 0] == 0
    assert [p.object_name for p in fr.objects] == ["ape", "eggbox"]
    assert np.allclose(fr.objects[1].t_m2c_m, scene[1].instances[1].t_m2c_m) and fr.objects[1].obj_id == 10
    info = bop.load_models_info(root / "models" / "models_info.json")[10]
    assert np.allclose(fr.objects[1].extents_m, info.size_m)
    assert np.allclose(fr.K, K_SMALL) and (fr.width, fr.height) == (64, 48)


def test_bop_source_selection_and_errors(tmp_path):
    root = make_bop(tmp_path / "lm", n=2, scenes=(1, 2))
    assert len(player.BopSource(root, scenes=[2])) == 2
    only = player.BopSource(root, objects=[10])
    assert [p.object_name for p in only.frame(0).objects] == ["eggbox"]
    with pytest.raises(InputError, match=r"--scene \[7\]"):
        player.BopSource(root, scenes=[7])
    with pytest.raises(InputError, match=r"--object \[5\]"):
        player.BopSource(root, objects=[5])
    src = player.BopSource(root)
    (root / "test" / "000001" / "rgb" / "000001.png").unlink()  # gone after listing
    with pytest.raises(InputError, match=r"000001/rgb/000001.png: image not found"):
        src.frame(1)


def test_bop_frames_without_images_are_skipped_or_refused(tmp_path, caplog):
    root = make_bop(tmp_path / "lm", n=3)
    (root / "test" / "000001" / "rgb" / "000001.png").unlink()
    with caplog.at_level("WARNING"):
        src = player.BopSource(root)
    assert len(src) == 2 and src.skipped == 1 and [src.frame(i).key for i in range(2)] == ["scene 000001 im 000000", "scene 000001 im 000002"]
    assert "000001/rgb/000001.png" in caplog.text
    with pytest.raises(InputError, match=r"000001/rgb/000001.png: image not found \(1 frame"):
        player.BopSource(root, strict=True)
    for i in (0, 2):
        (root / "test" / "000001" / "rgb" / f"{i:06d}.png").unlink()
    with pytest.raises(InputError, match="image not found"):
        player.BopSource(root)


def test_nyu_source_frames(tmp_path):
    root = make_nyu(tmp_path / "nyu", n=4)
    src = player.NyuSource(root, "test")
    ds = nyu.NyuDataset(root, "test")
    fr = src.frame(2)
    assert fr.frame_id == player.DEPTH_FRAME and fr.key == "test frame 0000003"
    assert np.array_equal(fr.depth_mm, nyu.load_depth_mm(ds[2].depth_path).astype(np.uint16))
    assert fr.hand.joint_names[-1] == "palm_center" and len(fr.hand.joint_names) == 14
    assert np.allclose(fr.hand.joints_m, nyu.eval_joints(ds[2]))
    assert np.allclose(fr.K, nyu.nyu_K())
    synth = player.NyuSource(root, "test", synthetic=True).frame(2).depth_mm.astype(int)
    assert np.array_equal(synth, np.where(fr.depth_mm > 0, fr.depth_mm.astype(int) + 5, 0))


@pytest.mark.parametrize("text,expect", [(None, range(10)), ("", range(10)), ("2:5", range(2, 5)), (":3", range(3)),
                                         ("7:", range(7, 10)), ("4", range(4, 5)), ("8:100", range(8, 10))])
def test_parse_range(text, expect):
    assert player.parse_range(text, 10) == expect


@pytest.mark.parametrize("text,msg", [("a:b", "integers"), ("1:2:3", "integers"), ("-1:3", "negative"), ("5:5", "selects no frame"),
                                      ("12:", "selects no frame")])
def test_parse_range_errors_name_the_argument(text, msg):
    with pytest.raises(InputError, match=f"--range.*{msg}"):
        player.parse_range(text, 10)


def test_schedule_loop_and_stamps():
    assert list(player.schedule(range(2, 4))) == [2, 3]
    assert list(player.schedule(range(2, 4), loop=True, max_frames=5)) == [2, 3, 2, 3, 2]
    stamps = [player.stamp_ns(k, 1_000_000_000, player.period_ns(10.0)) for k in range(5)]
    assert stamps == [1_000_000_000 + k * 100_000_000 for k in range(5)]
    assert player.period_ns(0.0) == player.DEFAULT_PERIOD_NS
    with pytest.raises(InputError, match="rate"):
        player.period_ns(-1.0)


def test_pacer_rate():
    p = player.Pacer(rate_hz=10.0)
    assert p.due(0.0)
    p.on_published(1, 0.0)
    assert not p.due(0.05) and not p.due(0.094) and p.due(0.0999)  # timer jitter must not halve the rate


def test_pacer_waits_for_ack_then_times_out():
    p = player.Pacer(rate_hz=0.0, wait_for_ack=True, ack_timeout_s=2.0)
    assert p.due(0.0)
    p.on_published(100, 0.0)
    assert not p.due(1.0)
    assert not p.on_ack(99) and not p.due(1.0)  # an answer to another frame is not an ack
    assert p.on_ack(100) and p.due(1.0)
    p.on_published(200, 1.0)
    assert not p.due(2.9) and p.due(3.1)  # timed out: go on, count it
    assert p.timeouts == 1 and p.acked == 1 and p.published == 2


def test_pacer_bad_arguments():
    with pytest.raises(InputError, match="rate"):
        player.Pacer(rate_hz=float("nan"))
    with pytest.raises(InputError, match="ack_timeout_s"):
        player.Pacer(ack_timeout_s=0.0)


def test_player_parameters_are_valid_specs():
    names = [s.name for s in PLAYER_NODE_PARAMS]
    assert len(names) == len(set(names)) and {"rate", "loop", "range", "qos.reliability", "wait_for_ack"} <= set(names)
    for s in PLAYER_NODE_PARAMS:
        assert s.check(s.default) == s.default
    spec = {s.name: s for s in PLAYER_NODE_PARAMS}
    with pytest.raises(InputError, match="parameter 'rate'"):
        spec["rate"].check(-1.0)
    with pytest.raises(InputError, match="parameter 'range'"):
        spec["range"].check("a:b")


def test_depth_conversion_refuses_overflow():
    with pytest.raises(InputError, match="16UC1"):
        player.depth_m_to_mm_u16(np.array([[70.0]]), "x.png")
    mm = player.depth_m_to_mm_u16(np.array([[0.5, np.nan, -1.0]]), "x.png")
    assert mm.tolist() == [[500, 0, 0]]


def test_embedded_sample_is_reused_once_generated(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(player, "write_hand_dataset", lambda *a, **k: calls.append(a))
    root = player.embedded_sample("nyu", tmp_path, frames=3)
    assert root == tmp_path / "sample_nyu_3_0" and calls == [(root, 3, 0, "test")]
    (root / "test").mkdir(parents=True)
    (root / "test" / "joint_data.mat").write_bytes(b"x")
    calls.clear()
    assert player.embedded_sample("nyu", tmp_path, frames=3) == root and calls == []

    def broken(*a, **k):
        raise InputError("render failed")

    monkeypatch.setattr(player, "write_object_dataset", broken)
    with pytest.raises(InputError, match="render failed"):
        player.embedded_sample("lm", tmp_path, frames=3)
    assert not (tmp_path / "sample_lm_3_0" / "models" / "models_info.json").exists()


def _param_keys_used(path: Path) -> set[str]:
    """String keys read as ``v[...]`` / ``self.values[...]`` in a node file (without importing rclpy)."""
    import ast

    keys = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            base = node.value
            if (isinstance(base, ast.Name) and base.id == "v") or (isinstance(base, ast.Attribute) and base.attr == "values"):
                keys.add(node.slice.value)
    return keys


def test_player_node_reads_only_declared_parameters():
    used = _param_keys_used(Path(player.__file__).parents[1] / "ros" / "dataset_player_node.py")
    declared = {s.name for s in PLAYER_NODE_PARAMS}
    assert used and used <= declared, used - declared


def test_dataset_names_its_objects(tmp_path):
    """Ground truth carries the names the estimators use: LINEMOD's for lm, the toy's for the embedded sample."""
    root = make_bop(tmp_path / "bop", obj_ids=(1,))
    assert player.open_source("lm", root).object_names() == {1: "ape"}
    assert player.open_source("toy", root).object_names() == {1: "toy"}
    with pytest.raises(InputError, match="dataset"):
        player.open_source("nope", root)
