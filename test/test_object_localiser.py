"""featmap_ros/object_localiser.py and the heatmap localiser: targets <-> windows, the loss, the
network, its training frames' augmentation, and the estimator's localise with BOP-style counts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from featmap_ros import cli
from featmap_ros.checkpoint import bundled_weights, load_checkpoint, save_checkpoint
from featmap_ros.errors import InputError
from featmap_ros.estimators import ObjectPoseEstimator
from featmap_ros.nets import HEATMAP_STRIDE, HeatmapLocaliser, LocaliserConfig, build_localiser
from featmap_ros.object_localiser import decode_heatmap, heatmap_loss, heatmap_targets
from featmap_ros.training.localiser import SceneFrameSource, attach_localiser, train_localiser

W_FRAME, H_FRAME = 640, 480


def compact(windows: dict[int, tuple[float, float, float]], n: int) -> torch.Tensor:
    """(1, n, 4) compact targets from {object index: (u px, v px, side px)} on a 640 x 480 frame."""
    t = torch.zeros(1, n, 4)
    for k, (u, v, side) in windows.items():
        t[0, k] = torch.tensor([u / W_FRAME, v / H_FRAME, np.log(side / W_FRAME), 1.0])
    return t


def perfect_output(target: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """(2 n + 2, gh, gw): the output a perfect network gives for ``target`` (1, n, 4)."""
    n = target.shape[1]
    t = heatmap_targets(target, gh, gw)
    heat = t["heat"][0].clamp(1e-6, 1 - 1e-6)
    out = torch.zeros(2 * n + 2, gh, gw)
    out[:n] = torch.log(heat / (1 - heat))
    out[:n][t["heat"][0] < 1.0] -= 3.0  # only the centre cells are peaks
    out[n:2 * n] = t["log_side"][0][:, None, None]
    for k in range(n):
        if t["present"][0, k] > 0:
            cy, cx = divmod(int(t["index"][0, k]), gw)
            out[2 * n:, cy, cx] = t["offset"][0, k]
    return out


def test_targets_peak_at_the_centre_cell_and_absent_objects_are_empty():
    gh, gw = 24, 32
    tgt = compact({0: (100.0, 200.0, 80.0)}, 2)
    t = heatmap_targets(tgt, gh, gw)
    u_cells, v_cells = 100.0 / W_FRAME * gw, 200.0 / H_FRAME * gh
    cy, cx = divmod(int(t["index"][0, 0]), gw)
    assert (cx, cy) == (int(u_cells), int(v_cells))
    assert t["heat"][0, 0, cy, cx] == pytest.approx(1.0) and float(t["heat"][0, 0].max()) == pytest.approx(1.0)
    assert float((t["heat"][0, 0] >= 1.0 - 1e-6).sum()) == 1
    assert t["offset"][0, 0].tolist() == pytest.approx([u_cells - cx - 0.5, v_cells - cy - 0.5], abs=1e-5)
    assert float(t["heat"][0, 1].abs().sum()) == 0.0 and t["present"][0, 1] == 0


def test_decoding_a_perfect_output_gives_back_the_windows():
    gh, gw = 24, 32
    want = {0: (100.0, 200.0, 80.0), 2: (431.3, 97.9, 120.0)}
    out = perfect_output(compact(want, 3), gh, gw)
    found = decode_heatmap(out, W_FRAME, H_FRAME, counts={0: 1, 1: 1, 2: 1})
    assert [k for k, _, _ in found] == [0, 1, 2]  # counts: the best peak even of an absent object
    by_k = {k: (w, p) for k, w, p in found}
    for k, (u, v, side) in want.items():
        w, p = by_k[k]
        assert (w.center_u, w.center_v, w.side) == pytest.approx((u, v, side), abs=1e-3)
        assert p > 0.99
    assert by_k[1][1] < 0.1
    # no counts: only peaks above the threshold
    assert sorted(k for k, _, _ in decode_heatmap(out, W_FRAME, H_FRAME)) == [0, 2]
    # counts name objects: the others are left out
    assert [k for k, _, _ in decode_heatmap(out, W_FRAME, H_FRAME, counts={2: 1})] == [2]


def test_loss_is_low_for_the_perfect_output_and_high_for_a_wrong_one():
    gh, gw = 12, 16
    tgt = compact({0: (300.0, 200.0, 90.0), 1: (120.0, 360.0, 60.0)}, 2)
    good = heatmap_loss(perfect_output(tgt, gh, gw)[None], tgt)
    moved = compact({0: (500.0, 60.0, 90.0), 1: (600.0, 100.0, 200.0)}, 2)
    bad = heatmap_loss(perfect_output(moved, gh, gw)[None], tgt)
    assert float(good["size"]) < 1e-5 and float(good["offset"]) < 1e-5
    assert float(bad["loss"]) > 5 * float(good["loss"])


def test_config_errors_name_the_field():
    with pytest.raises(InputError, match="localiser.input_width"):
        build_localiser(LocaliserConfig(kind="heatmap", input_width=100, input_height=96, backbone="small"))
    with pytest.raises(InputError, match="localiser.backbone"):
        build_localiser(LocaliserConfig(kind="heatmap", backbone="vgg16"))


def test_network_shape_and_frozen_imagenet_stem():
    loc = build_localiser(LocaliserConfig(kind="heatmap", input_width=96, input_height=64, n_objects=3, backbone="small"))
    out = loc(torch.rand(2, 3, 64, 96))
    assert out.shape == (2, 2 * 3 + 2, 64 // HEATMAP_STRIDE, 96 // HEATMAP_STRIDE)
    lite = HeatmapLocaliser(LocaliserConfig(kind="heatmap", input_width=64, input_height=64, n_objects=2))
    lite.train()
    assert not any(p.requires_grad for p in lite.stem.parameters())
    assert not lite.stem.training and lite.head.training
    before = {k: v.clone() for k, v in lite.stem.state_dict().items()}
    opt = torch.optim.SGD([p for p in lite.parameters() if p.requires_grad], lr=0.1)
    lite(torch.rand(2, 3, 64, 64)).sum().backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in lite.stem.state_dict().items())  # weights and BN statistics


def test_augmentation_moves_the_targets_with_the_image():
    h, w = 96, 128
    img = torch.zeros(1, 3, h, w, dtype=torch.uint8)
    img[0, :, 40:56, 80:96] = 255  # a bright square centred at (88, 48) px
    tgt = torch.tensor([[[88.0 / w, 48.0 / h, np.log(16.0 / w), 1.0]]])
    src = SceneFrameSource({"image": img, "target": tgt}, None, seed=0, augment="none")
    for step in range(5):
        b = src.batch(step, 1)
        u, v, ls, p = b["target"][0, 0].tolist()
        mass = b["image"][0, 0]
        ys, xs = torch.nonzero(mass > 0.5, as_tuple=True)
        if p == 0:
            continue
        assert float(xs.float().mean()) + 0.5 == pytest.approx(u * w, abs=1.0)
        assert float(ys.float().mean()) + 0.5 == pytest.approx(v * h, abs=1.0)
        assert float(xs.max() - xs.min() + 1) == pytest.approx(np.exp(ls) * w, abs=2.0)


def test_trained_heatmap_localiser_in_a_checkpoint_finds_the_object(tmp_path):
    """A small heatmap localiser learns one bright square's window; attached to the bundled demo
    checkpoint it is found by the estimator (with and without counts), float16 when bundled."""
    h, w = 64, 96
    rng = np.random.default_rng(0)
    imgs, tgts = [], []
    for _ in range(64):
        im = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        cu, cv, s = rng.uniform(20, w - 20), rng.uniform(20, h - 20), rng.uniform(14, 22)
        im[int(cv - s / 2):int(cv + s / 2), int(cu - s / 2):int(cu + s / 2)] = 255
        imgs.append(im)
        tgts.append([[cu / w, cv / h, np.log(s / w), 1.0]])
    data = {"image": torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous(), "target": torch.tensor(tgts, dtype=torch.float32)}
    cfg = LocaliserConfig(kind="heatmap", input_width=w, input_height=h, n_objects=1, backbone="small", head_channels=32)
    loc, m = train_localiser(cfg, SceneFrameSource(data, None, 0, "none"), 250, batch_size=16, lr=3e-3, device="cpu", progress=False)
    ck_path = tmp_path / "demo_with_loc.pt"
    ck = load_checkpoint(bundled_weights("object"), task="object")
    ck["weights_dtype"] = "float16"
    save_checkpoint(tmp_path / "bundled.pt", ck)
    attach_localiser(tmp_path / "bundled.pt", loc, m, out=ck_path)
    assert all(v.dtype == torch.float16 for v in load_checkpoint(ck_path)["localiser"]["state"].values() if torch.is_floating_point(v))
    est = ObjectPoseEstimator.from_checkpoint(ck_path, device="cpu")
    frame = np.full((480, 640, 3), 20, np.uint8)
    frame[200:300, 400:500] = 255  # the square at 1/6.67 scale: centre (450, 250), side 100 px
    found = est.localise(frame, objects={"toy": 1})
    assert len(found) == 1
    name, win, p = found[0]
    assert name == "toy" and abs(win.center_u - 450) < 25 and abs(win.center_v - 250) < 25 and 60 < win.side < 160
    assert est.localise(frame)[0][1] == win and p > 0.5
    assert len(est.estimate(frame, np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1.0]]), objects={"toy": 1})) <= 1
    with pytest.raises(InputError, match="unknown object"):
        est.localise(frame, objects={"cat": 1})
    wide = np.full((720, 1280, 3), 20, np.uint8)  # 16:9: padded to the input's 3:2, the square stays square
    wide[400:600, 800:1000] = 255
    (_, win, _), = est.localise(wide, objects={"toy": 1})
    assert abs(win.center_u - 900) < 50 and abs(win.center_v - 500) < 50 and 130 < win.side < 300


def test_featmap_train_localiser_needs_steps_and_a_checkpoint(tmp_path):
    with pytest.raises(InputError, match="localiser_steps"):
        cli_run(["train", "localiser", "--config", "config/lmo.yaml", "--checkpoint", str(bundled_weights("object"))])
    with pytest.raises(InputError, match="--checkpoint: .*missing.pt"):
        cli_run(["train", "localiser", "--config", "config/lmo.yaml", "--checkpoint", str(tmp_path / "missing.pt"), "localiser_steps=5"])


def cli_run(argv):
    from featmap_ros.cli import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


def test_eval_targets_come_from_the_targets_file_or_visible_instances(tmp_path):
    from types import SimpleNamespace

    from featmap_ros.evaluation.datasets import image_targets

    g = lambda o, v: SimpleNamespace(obj_id=o, visib_fract=v)  # noqa: E731
    frames = [SimpleNamespace(scene_id=2, im_id=3, instances=[g(1, 0.5), g(5, 0.05), g(1, None)])]
    assert image_targets(tmp_path, "gt", frames) == {}
    assert image_targets(tmp_path, "localiser", frames) == {(2, 3): {1: 2}}
    (tmp_path / "test_targets_bop19.json").write_text(json.dumps([{"scene_id": 2, "im_id": 3, "obj_id": 5, "inst_count": 1}]))
    assert image_targets(tmp_path, "localiser", frames) == {(2, 3): {5: 1}}


def test_window_quality_against_the_ground_truth_window():
    from featmap_ros.crops import Window
    from featmap_ros.evaluation.datasets import window_error, window_summary

    gt = Window(100.0, 100.0, 50.0)
    assert window_error(gt, None) is None
    assert window_error(gt, (75.0, 75.0, 50.0, 50.0)) == pytest.approx((0.0, 1.0))
    e = window_error(gt, (80.0, 75.0, 60.0, 60.0))  # centre (110, 105), side 60
    assert e == pytest.approx((np.hypot(10, 5) / 50, 1.2))
    s = window_summary([None, (0.0, 1.0), e, (0.5, 1.0)])
    assert s["instances"] == 4 and s["with_window"] == 0.75 and s["good"] == 0.25  # e's centre is 0.22 of the side off
    assert s["median_side_ratio"] == pytest.approx(1.0)


def test_wide_frames_are_padded_to_the_localisers_aspect_not_squashed():
    from featmap_ros.crops import pad_to_aspect

    img = np.ones((720, 1280, 3), np.uint8)
    out = pad_to_aspect(img, 4 / 3)
    assert out.shape == (960, 1280, 3) and out[:720].min() == 1 and out[720:].max() == 0
    assert pad_to_aspect(np.ones((480, 640, 3), np.uint8), 4 / 3).shape == (480, 640, 3)
    assert pad_to_aspect(np.ones((480, 480, 3), np.uint8), 4 / 3).shape == (480, 640, 3)
