"""featmap_ros/checkpoint.py: checkpoints and caches load without running code, the bundled
weights load unchanged, typed metadata names the field at fault."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from featmap_ros import checkpoint as ckpt
from featmap_ros.errors import InputError
from featmap_ros.estimators import HandPoseEstimator, ObjectPoseEstimator
from featmap_ros.hand_localiser import HandCentreRefiner
from featmap_ros.training.caches import load_or_build


class _RunsCode:
    """A pickle that calls os.system when it is unpickled (what a crafted .pt would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path, marker, as_torch: bool = True):
    payload = {"format": ckpt.CHECKPOINT_FORMAT, "model_config": {"task": "object"}, "x": _RunsCode(marker)}
    if as_torch:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    # the payload really runs code when unpickled without restrictions
    probe = marker.with_name("probe")
    pickle.loads(pickle.dumps(_RunsCode(probe)))
    assert probe.exists()
    probe.unlink()


@pytest.mark.parametrize("as_torch", [True, False])
def test_malicious_checkpoint_runs_nothing_and_names_the_file(tmp_path, as_torch):
    bad, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    _malicious(bad, marker, as_torch)
    with pytest.raises(InputError, match=r"evil\.pt.*(unsafe|unreadable)"):
        ckpt.load_checkpoint(bad)
    with pytest.raises(InputError, match=r"evil\.pt"):
        ObjectPoseEstimator.from_checkpoint(bad)
    with pytest.raises(InputError, match=r"evil\.pt"):
        HandCentreRefiner.from_file(bad)
    assert not marker.exists()


def test_malicious_cache_runs_nothing(tmp_path):
    bad, marker = tmp_path / "object_0123.pt", tmp_path / "pwned"
    _malicious(bad, marker)
    with pytest.raises(InputError, match=r"object_0123\.pt.*data cache"):
        load_or_build(bad, lambda: {"never": 1})
    assert not marker.exists()


def test_cache_with_numpy_arrays_round_trips(tmp_path):
    path = tmp_path / "c.pt"
    data = {"K": np.eye(3), "ids": np.arange(4, dtype=np.int64), "t": torch.ones(2), "names": ["a"], "flag": np.array([True])}
    assert load_or_build(path, lambda: data) is data
    back = load_or_build(path, lambda: pytest.fail("rebuilt"))
    assert np.array_equal(back["K"], np.eye(3)) and back["ids"].dtype == np.int64 and back["names"] == ["a"]


def test_rng_state_round_trips_through_a_safe_load(tmp_path):
    np.random.seed(3)
    torch.manual_seed(3)
    state = ckpt.rng_state()
    ckpt.save_checkpoint(tmp_path / "s.pt", {"rng": state})
    a = (np.random.rand(3), torch.rand(3))
    ckpt.set_rng_state(ckpt.safe_torch_load(tmp_path / "s.pt")["rng"])
    b = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("task", ["object", "hand"])
def test_bundled_weights_load_unchanged(task):
    path = ckpt.bundled_weights(task)
    ck = ckpt.load_checkpoint(path, task=task)
    assert ck["format"] == ckpt.CHECKPOINT_FORMAT
    if task == "object":
        est = ObjectPoseEstimator.from_checkpoint(path, device="cpu")
        assert isinstance(est.meta, ckpt.ObjectMeta) and est.corners_m.shape == (len(est.object_names), 8, 3)
    else:
        est = HandPoseEstimator.from_checkpoint(path, device="cpu")
        assert isinstance(est.meta, ckpt.HandMeta) and len(est.joint_names) == 14 and est.centre_refiner is not None


def test_object_meta_names_the_bad_field():
    good = {"object_names": ["a", "b"], "corners_m": np.zeros((2, 8, 3)).tolist()}
    m = ckpt.ObjectMeta.from_dict(good)
    assert m.obj_ids == (1, 2) and m.window_scale == ckpt.DEFAULT_WINDOW_SCALE
    with pytest.raises(InputError, match="object_names"):
        ckpt.ObjectMeta.from_dict({"corners_m": []}, "x.pt: meta")
    with pytest.raises(InputError, match="corners_m"):
        ckpt.ObjectMeta.from_dict({"object_names": ["a"]})
    with pytest.raises(InputError, match="obj_ids"):
        ckpt.ObjectMeta.from_dict(dict(good, obj_ids=[1]))
    with pytest.raises(InputError, match="joint_names"):
        ckpt.HandMeta.from_dict({"joint_names": ["a"]}, n_joints=14)
    names = [f"j{i}" for i in range(14)]
    assert ckpt.HandMeta.from_dict({"joint_names": names}, 14).centre == "palm"  # older checkpoints
    assert ckpt.HandMeta.from_dict({"joint_names": names, "centre": "com", "cube_mm": 250}, 14).centre == "com"
    with pytest.raises(InputError, match="'centre'"):
        ckpt.HandMeta.from_dict({"joint_names": names, "centre": "wrist"}, 14)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.pt: checkpoint not found"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("name", ["lmo.pt", "lmo_synthetic_only.pt"])
def test_bundled_lmo_weights_cover_the_eight_lmo_objects(name):
    est = ObjectPoseEstimator.from_checkpoint(ckpt.WEIGHTS_DIR / name, device="cpu")
    assert est.use_mapping == (name == "lmo.pt")  # synthetic only: no real frames, no g
    assert ckpt.load_checkpoint(ckpt.WEIGHTS_DIR / name)["weights_dtype"] == "float16"
    assert est.obj_ids == [1, 5, 6, 8, 9, 10, 11, 12]
    assert est.object_names == ["ape", "can", "cat", "driller", "duck", "eggbox", "glue", "holepuncher"]
    assert est.model.cfg.backbone == "efficientnet_lite0"
    assert all("/" not in p for p in est.meta.mesh_paths)  # file names in the user's BOP models/ folder
    # one heatmap localiser for the eight objects; real frames only in the mapping file's
    loc = ckpt.load_checkpoint(ckpt.WEIGHTS_DIR / name)["localiser"]
    assert est.localiser.cfg.kind == "heatmap" and est.localiser.cfg.n_objects == 8
    assert loc["metrics"]["real_frames"] == (10 if name == "lmo.pt" else 0)
    assert all(v.dtype == torch.float16 for v in loc["state"].values() if torch.is_floating_point(v))
