"""Learned hand-centre refinement: shapes, bundled weights, checkpoints, bad input."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from featmap_ros.data.nyu import nyu_K
from featmap_ros.errors import InputError
from featmap_ros.evaluation.bench import check_eval_seed
from featmap_ros.hand_localiser import (
    BUNDLED_WEIGHTS,
    CHECKPOINT_FORMAT,
    HandCentreNet,
    HandCentreNetConfig,
    HandCentreRefiner,
    crop_for_refiner,
    localise_and_refine,
    localise_hand,
)
from featmap_ros.render.depth_sensor import sample_pair
from featmap_ros.render.hand import PALM_CENTER
from featmap_ros.training.hand_centre import HandCentreTrainConfig, centre_error_stats, train


@pytest.fixture(scope="module")
def refiner() -> HandCentreRefiner:
    return HandCentreRefiner.from_file(BUNDLED_WEIGHTS, runtime="torch")  # ONNX Runtime is compared with it below


@pytest.fixture(scope="module")
def frames():
    # seed 7: neither the refiner's training (1000) nor validation (1001) stream
    K = nyu_K()
    rng = np.random.default_rng(7)
    return K, [sample_pair(rng, K) for _ in range(10)]


def _write(path, ck):
    torch.save(ck, path)
    return path


def _checkpoint(cfg: HandCentreNetConfig, state_cfg: HandCentreNetConfig | None = None) -> dict:
    net = HandCentreNet(state_cfg or cfg)
    return {"format": CHECKPOINT_FORMAT, "net_config": {**asdict(cfg), "channels": list(cfg.channels)}, "state_dict": net.state_dict()}


def test_shapes():
    cfg = HandCentreNetConfig()
    net = HandCentreNet(cfg).eval()
    assert net(torch.zeros(2, 1, cfg.crop_size, cfg.crop_size)).shape == (2, 3)
    depth = np.full((480, 640), 0.6, np.float32)
    crop = crop_for_refiner(depth, nyu_K(), np.array([0.0, 0.0, 0.6]), cfg)
    assert crop.shape == (cfg.crop_size, cfg.crop_size) and crop.dtype == np.float32
    assert np.allclose(crop, 0.0)  # the plane at the centre's depth is the middle of the cube


def test_bundled_weights_small_and_self_describing(refiner):
    assert BUNDLED_WEIGHTS.stat().st_size < 1_000_000
    ck = torch.load(BUNDLED_WEIGHTS, map_location="cpu", weights_only=True)
    assert ck["format"] == CHECKPOINT_FORMAT
    assert ck["train_config"]["seed"] == HandCentreTrainConfig(**ck["train_config"]).seed
    assert HandCentreNetConfig(**{**ck["net_config"], "channels": tuple(ck["net_config"]["channels"])}) == refiner.cfg
    assert "validation" in ck["metrics"]


def test_refinement_improves_the_localiser(refiner, frames):
    K, pairs = frames
    e0, e1 = [], []
    for hand, _, real in pairs:
        palm = hand.joints_c_m()[PALM_CENTER]
        c = localise_hand(real, K)
        assert c is not None
        r = refiner.refine(real, K, c, iterations=3)
        assert r.shape == (3,) and r.dtype == np.float64
        e0.append(np.linalg.norm(c - palm) * 1000)
        e1.append(np.linalg.norm(r - palm) * 1000)
        assert np.allclose(localise_and_refine(real, K, refiner), r)
    e0, e1 = np.array(e0), np.array(e1)
    msg = f"unrefined {np.round(e0, 1)} mm, refined {np.round(e1, 1)} mm"
    assert np.median(e1) < np.median(e0), msg
    assert np.mean(e1) < np.mean(e0), msg
    assert np.median(e1) <= 15.0, msg


def test_zero_iterations_is_the_start(refiner, frames):
    K, pairs = frames
    c = np.array([0.01, -0.02, 0.7])
    assert np.array_equal(refiner.refine(pairs[0][2], K, c, iterations=0), c)


def test_bad_input(refiner):
    K = nyu_K()
    empty = np.zeros((480, 640), np.float32)
    assert localise_and_refine(empty, K, refiner) is None
    assert localise_and_refine(np.full((480, 640), np.nan), K, refiner) is None
    # no hand in the crop: a finite answer, never a crash
    assert np.all(np.isfinite(refiner.refine(empty, K, np.array([0.0, 0.0, 0.5]))))
    with pytest.raises(InputError, match="center_c_m"):
        refiner.refine(empty, K, np.array([0.0, np.nan, 0.5]))
    with pytest.raises(InputError, match="center_c_m"):
        refiner.refine(empty, K, np.array([0.0, 0.0, -0.5]))
    with pytest.raises(InputError, match="center_c_m"):
        refiner.refine(empty, K, np.array([0.0, 0.5]))
    with pytest.raises(InputError, match="depth_m"):
        refiner.refine(np.zeros((480, 640, 3)), K, np.array([0.0, 0.0, 0.5]))
    with pytest.raises(InputError, match="iterations"):
        refiner.refine(empty, K, np.array([0.0, 0.0, 0.5]), iterations=-1)
    with pytest.raises(InputError):
        localise_and_refine(np.zeros((4,)), K, refiner)


def test_weights_of_another_architecture(tmp_path):
    cfg = HandCentreNetConfig()
    other = HandCentreNetConfig(channels=(4, 8, 16))
    p = _write(tmp_path / "a.pt", _checkpoint(cfg, state_cfg=other))
    with pytest.raises(InputError, match=r"state_dict\.features\.0\.weight"):
        HandCentreRefiner.from_file(p)
    p = _write(tmp_path / "b.pt", _checkpoint(cfg, state_cfg=HandCentreNetConfig(hidden=32)))
    with pytest.raises(InputError, match=r"state_dict\.head\.1\.weight"):
        HandCentreRefiner.from_file(p)
    ck = _checkpoint(cfg)
    ck["net_config"]["depth_layers"] = 5
    with pytest.raises(InputError, match=r"net_config\.depth_layers"):
        HandCentreRefiner.from_file(_write(tmp_path / "c.pt", ck))
    ck = _checkpoint(cfg)
    ck["net_config"]["crop_size"] = 60
    with pytest.raises(InputError, match=r"net_config\.crop_size"):
        HandCentreRefiner.from_file(_write(tmp_path / "d.pt", ck))
    ck = _checkpoint(cfg)
    ck["format"] = "featmap_ros.checkpoint/1"
    with pytest.raises(InputError, match="'format'"):
        HandCentreRefiner.from_file(_write(tmp_path / "e.pt", ck))
    with pytest.raises(InputError, match="'format'"):
        HandCentreRefiner.from_file(_write(tmp_path / "f.pt", [1, 2, 3]))
    (tmp_path / "g.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="g.pt"):
        HandCentreRefiner.from_file(tmp_path / "g.pt")
    with pytest.raises(InputError, match="missing.pt"):
        HandCentreRefiner.from_file(tmp_path / "missing.pt")


def test_train_writes_loadable_weights(tmp_path):
    tc = HandCentreTrainConfig(seed=5000, frames=2, crops_per_frame=3, val_frames=0, epochs=1, batch_size=2)
    out = tmp_path / "w" / "hc.pt"
    metrics = train(out, tc, progress=False)
    assert metrics["train_crops"] >= 2 and np.isfinite(metrics["final_train_loss"])
    assert [p.name for p in out.parent.iterdir()] == ["hc.pt"]  # no temporary left behind
    r = HandCentreRefiner.from_file(out)
    assert r.meta["train_config"] == asdict(tc)
    crops = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = r.net(torch.from_numpy(crops)[:, None]).numpy()
    assert np.allclose(r.predict_offsets(crops), np.clip(want, -1, 1), atol=1e-6)
    with pytest.raises(InputError, match="seed"):
        check_eval_seed(r, 5000)
    with pytest.raises(InputError, match="seed"):
        check_eval_seed(r, 5001)
    check_eval_seed(r, 1)


def test_centre_error_stats_known_values():
    s = centre_error_stats(np.array([10.0, 20.0, np.inf, 5.0]))
    assert s["found"] == 3
    assert s["mean_error_mm"] == pytest.approx(35.0 / 3)
    assert s["median_error_mm"] == pytest.approx(15.0)
    assert s["within_15mm"] == pytest.approx(0.5)
    assert s["within_25mm"] == pytest.approx(0.75)


def test_hand_estimator_crops_at_the_refined_centre(refiner, frames):
    """HandPoseEstimator localises, then refines: the crop centre is the refiner's answer."""
    from featmap_ros.estimators import HandPoseEstimator
    from featmap_ros.nets import ModelConfig, build_model

    model = build_model(ModelConfig(task="hand", backbone="small", input_size=32, feature_dim=16,
                                    small_channels=[4, 8], pretrained=False))
    meta = {"cube_mm": 300.0, "joint_names": [f"j{i}" for i in range(14)]}
    plain = HandPoseEstimator(model, meta, device="cpu")
    refined = HandPoseEstimator(model, meta, device="cpu", centre_refiner=refiner)
    K, pairs = frames
    _, _, real_m = pairs[0]
    start = localise_hand(real_m, K)
    assert start is not None
    np.testing.assert_allclose(plain.estimate(real_m, K).crop_center_m, start, atol=1e-9)
    np.testing.assert_allclose(refined.estimate(real_m, K).crop_center_m, refiner.refine(real_m, K, start), atol=1e-9)


# ----------------------------------------------------------------------------- run-time speed-ups


def test_crop_depth_at_equals_crop_depth():
    """The crop-sized cleaning gives crops.crop_depth's crop exactly, for every kind of invalid value."""
    from featmap_ros.crops import crop_depth
    from featmap_ros.hand_localiser import crop_depth_at

    K = nyu_K()
    rng = np.random.default_rng(3)
    d = rng.uniform(0.3, 1.2, (480, 640)).astype(np.float32)
    holes = rng.random(d.shape)
    d[holes < 0.05] = np.nan
    d[(holes >= 0.05) & (holes < 0.07)] = 0.0
    d[(holes >= 0.07) & (holes < 0.08)] = -0.4
    d[(holes >= 0.08) & (holes < 0.09)] = np.inf
    centres = [np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.2), rng.uniform(0.3, 1.5)]) for _ in range(30)]
    centres += [np.array([5.0, 0.0, 0.8]), np.array([0.0, 0.0, 0.05])]  # outside the image; very close
    for depth in (d, d.astype(np.float64), d[:, ::-1]):
        for c in centres:
            for size in (48, 64):
                a, Ta = crop_depth(depth, c, K, 0.3, size)
                b, Tb = crop_depth_at(depth, c, K, 0.3, size)
                assert b.dtype == np.float32 and b.shape == (size, size)
                np.testing.assert_array_equal(a, b)
                np.testing.assert_array_equal(Ta.M_img2crop, Tb.M_img2crop)
    with pytest.raises(InputError, match="depth_m"):
        crop_depth_at(d[None], centres[0], K)
    with pytest.raises(InputError, match="center_c_m"):
        crop_depth_at(d, np.array([0.0, 0.0, -1.0]), K)


def test_localiser_stride_against_every_pixel(frames):
    """Stride 2 (the default) lands near the every-pixel answer; both as close to the palm."""
    K, pairs = frames
    moved, e1, e2 = [], [], []
    for hand, _, real in pairs:
        palm = hand.joints_c_m()[PALM_CENTER]
        c1, c2 = localise_hand(real, K, stride=1), localise_hand(real, K)
        assert c1 is not None and c2 is not None and c2.dtype == np.float64
        moved.append(np.linalg.norm(c1 - c2) * 1000)
        e1.append(np.linalg.norm(c1 - palm) * 1000)
        e2.append(np.linalg.norm(c2 - palm) * 1000)
    assert np.median(moved) < 1.0 and np.max(moved) < 5.0, np.round(moved, 1)
    assert np.mean(e2) < np.mean(e1) + 2.0, (np.round(e1, 1), np.round(e2, 1))
    # float32 and float64 depth give the same answer
    np.testing.assert_allclose(localise_hand(pairs[0][2].astype(np.float64), K), localise_hand(pairs[0][2].astype(np.float32), K), atol=1e-9)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="stride"):
            localise_hand(pairs[0][2], K, stride=bad)


def test_tail_thresholds_select_the_percentile_tails():
    from featmap_ros.hand_localiser import _tail_thresholds

    rng = np.random.default_rng(0)
    for n in list(range(1, 40)) + [100, 4001]:
        for rounded in (False, True):
            s = rng.normal(size=n)
            s = np.round(s, 1) if rounded else s  # ties
            lo, hi = np.percentile(s, [3.0, 97.0])
            a, b = _tail_thresholds(s, 0.03)
            assert np.array_equal(s <= lo, s <= a) and np.array_equal(s >= hi, s >= b), (n, rounded)


def test_refine_batch_equals_one_by_one(refiner, frames):
    K, pairs = frames
    depths = [p[2] for p in pairs[:4]]
    starts = [localise_hand(d, K) for d in depths]
    batch = refiner.refine_batch(depths, K, starts)
    for d, c, b in zip(depths, starts, batch):
        np.testing.assert_allclose(b, refiner.refine(d, K, c), atol=1e-6)  # batch-size rounding of the network only
    assert refiner.refine_batch([], K, []) == []
    assert all(np.array_equal(a, b) for a, b in zip(refiner.refine_batch(depths, K, starts, iterations=0), starts))
    with pytest.raises(InputError, match=r"centers_c_m\[1\]"):
        refiner.refine_batch(depths[:2], K, [starts[0], np.array([0.0, 0.0, -0.5])])
    with pytest.raises(InputError, match=r"depths_m\[0\]"):
        refiner.refine_batch([np.zeros((4, 4, 3))], K, [starts[0]])
    with pytest.raises(InputError, match="centers_c_m"):
        refiner.refine_batch(depths[:2], K, starts[:1])


def test_folded_batch_norm_is_the_same_function(refiner):
    from featmap_ros.hand_localiser import fold_batch_norm

    net = HandCentreNet(HandCentreNetConfig())
    with torch.no_grad():  # non-trivial running statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    net.eval()
    folded = fold_batch_norm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is left as it was
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (3, 1, 64, 64)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(folded(x).numpy(), net(x).numpy(), atol=1e-5)


def test_refiner_in_onnx_runtime_matches_torch(refiner, frames):
    pytest.importorskip("onnxruntime")
    ort_refiner = HandCentreRefiner.from_file(BUNDLED_WEIGHTS)  # the default
    assert ort_refiner.runtime == "onnxruntime" and refiner.runtime == "torch"
    crops = np.random.default_rng(2).uniform(-1, 1, (3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(ort_refiner.predict_offsets(crops), refiner.predict_offsets(crops), atol=1e-5)
    K, pairs = frames
    d = pairs[0][2]
    c = localise_hand(d, K)
    assert np.linalg.norm(ort_refiner.refine(d, K, c) - refiner.refine(d, K, c)) < 1e-3
    with pytest.raises(InputError, match="runtime"):
        HandCentreRefiner.from_file(BUNDLED_WEIGHTS, runtime="tensorrt")
