"""Torch datasets of hand crops: synthetic online, NYU pairs, evaluation; overlays."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from featmap_ros.crops import crop_to_joints
from featmap_ros.data import hand_samples as hs
from featmap_ros.data.nyu import NyuSplitWriter, nyu_K
from featmap_ros.data.specs import NYU_EVAL_JOINTS
from featmap_ros.errors import InputError
from featmap_ros.render.depth_sensor import sample_pair

K = nyu_K()


def test_synthetic_samples():
    ds = hs.SyntheticHandCrops(size=64, seed=3, length=3)
    items = list(ds)
    assert len(items) == 3
    s = items[0]
    assert s["depth"].shape == (1, 64, 64) and s["depth"].dtype == torch.float32
    assert s["joints_n"].shape == (14, 3) and s["center_c_m"].shape == (3,) and s["K"].shape == (3, 3)
    assert s["depth"].min() >= -1 and s["depth"].max() <= 1 and (s["depth"] < 1).any()
    assert s["joints_n"].abs().max() < 1.2
    again = list(hs.SyntheticHandCrops(size=64, seed=3, length=3))
    assert torch.equal(again[2]["depth"], items[2]["depth"])
    other = next(iter(hs.SyntheticHandCrops(size=64, seed=4, length=1)))
    assert not torch.equal(other["depth"], items[0]["depth"])


def test_sample_transform_inverts_labels():
    ds = hs.SyntheticHandCrops(size=128, seed=0)
    rng = np.random.default_rng(0)
    s = ds.sample(rng)
    T = hs.transform_of(s, 128)
    J = crop_to_joints(s["joints_n"].numpy().astype(np.float64), T)
    # float32 storage of the normalised joints and the centre: well under 0.1 mm
    n_back = hs.joints_to_crop(J, T)
    np.testing.assert_allclose(n_back, s["joints_n"].numpy(), atol=1e-6)
    batch = torch.utils.data.default_collate([s, ds.sample(rng)])
    T1 = hs.transform_of(batch, 128, index=1)
    assert T1.cube_m == pytest.approx(float(batch["cube_m"][1]))


def _write_pairs(root, n=3, seed=0):
    rng = np.random.default_rng(seed)
    hands = []
    with NyuSplitWriter(root / "train", K) as w:
        for _ in range(n):
            hand, synth, real = sample_pair(rng, K)
            w.add(hand.joints_c_m(), depth_mm=real * 1000, synth_mm=synth * 1000)
            hands.append(hand)
    return hands


def test_pairs_from_nyu_layout(tmp_path):
    hands = _write_pairs(tmp_path)
    ds = hs.NyuPairCrops(tmp_path, "train", size=64)
    assert len(ds) == 3
    s = ds[1]
    assert s["real"].shape == s["synth"].shape == (1, 64, 64)
    J14 = hands[1].joints_c_m()[list(NYU_EVAL_JOINTS)]
    T = hs.transform_of(s, 64)
    np.testing.assert_allclose(crop_to_joints(s["joints_n"].numpy().astype(np.float64), T), J14, atol=1e-5)
    hand_px = s["synth"] < 1
    assert hand_px.sum() > 50
    # same cube: where the synthetic hand is, the real-like crop is mostly the same surface
    diff = (s["real"] - s["synth"]).abs()[hand_px & (s["real"] < 1)]
    assert diff.median() < 0.05
    # the real-like crop has background the synthetic one lacks, or noise: they differ
    assert not torch.equal(s["real"], s["synth"])
    aug = hs.NyuPairCrops(tmp_path, "train", size=64, augment=True, seed=1, indices=[0, 2])
    assert len(aug) == 2 and int(aug[1]["index"]) == 2


def test_pairs_centred_on_the_refined_centre_of_mass(tmp_path):
    from featmap_ros.hand_localiser import refined_com_m
    from featmap_ros.data.nyu import NyuDataset, load_depth_mm

    hands = _write_pairs(tmp_path)
    ds = hs.NyuPairCrops(tmp_path, "train", size=64, cube_m=0.25, centre="com")
    s = ds[0]
    real_m = load_depth_mm(NyuDataset(tmp_path, "train")[0].depth_path) / 1000.0
    want = refined_com_m(real_m, K, hands[0].joints_c_m()[32], 0.25)
    np.testing.assert_allclose(s["center_c_m"].numpy(), want, atol=1e-6)
    assert float(s["cube_m"]) == pytest.approx(0.25)
    with pytest.raises(InputError, match="centre"):
        hs.NyuPairCrops(tmp_path, "train", centre="wrist")


def test_synthetic_cache_of_the_deepprior_recipe():
    from featmap_ros.training.prepare import render_hand_synthetic

    out = render_hand_synthetic(32, 3, seed=0, progress=False, domain="kinect", centre="com", cube_mm=250.0)
    assert out["depth"].shape == (3, 1, 32, 32) and out["joints_n"].shape == (3, 14, 3)
    # joints are relative to the centre of mass (tens of mm from the palm), in units of the 125-mm half cube
    palm = out["joints_n"][:, 13]
    assert 0.05 < float(palm.norm(dim=1).mean()) < 0.8
    first = render_hand_synthetic(32, 2, seed=0, progress=False)
    assert float(first["joints_n"][:, 13].norm(dim=1).max()) < 0.2  # the first recipe: palm centre + 5 mm jitter


def test_eval_crops(tmp_path):
    _write_pairs(tmp_path / "x", n=2, seed=1)
    (tmp_path / "x" / "train").rename(tmp_path / "x" / "test")
    ds = hs.NyuEvalCrops(tmp_path / "x", "test", size=64, center="detect")
    s = ds[0]
    assert s["depth"].shape == (1, 64, 64) and s["joints_c_m"].shape == (14, 3)
    assert bool(s["detected"])
    with pytest.raises(InputError, match="center"):
        hs.NyuEvalCrops(tmp_path / "x", "test", center="oracle")


def test_overlay_png(tmp_path):
    from featmap_ros.draw.images import colorize_crop, write_png
    from featmap_ros.draw.skeleton import draw_hand_skeleton, hand_overlay

    rng = np.random.default_rng(0)
    hand, synth, real = sample_pair(rng, K)
    J = hand.joints_c_m()[list(NYU_EVAL_JOINTS)]
    img = hand_overlay(real, K, gt_c_m=J, pred_c_m=J + 0.01, crop_to=J[13], scale=2)
    assert img.dtype == np.uint8 and img.ndim == 3
    write_png(tmp_path / "o.png", img)
    assert (tmp_path / "o.png").stat().st_size > 1000
    assert colorize_crop(np.ones((8, 8))).max() == 0
    with pytest.raises(InputError):
        draw_hand_skeleton(np.zeros((4, 4, 3), np.uint8), np.zeros((13, 2)))
