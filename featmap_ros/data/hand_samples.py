"""Torch datasets of DeepPrior depth crops for the hand (NYU) task.

- :class:`SyntheticHandCrops`: endless synthetic crops rendered online (clean hand + forearm
  stub, the ``synthdepth`` domain), with DeepPrior++ augmentation; seeded per DataLoader worker.
- :class:`NyuPairCrops`: real/synthetic PAIRS from an NYU-layout folder (``depth_1_*`` with its
  ``synthdepth_1_*``), both cropped with the same cube (and the same augmentation).
- :class:`NyuEvalCrops`: map-style crops of an NYU-layout split for evaluation, centred on the
  ground-truth palm centre or on the run-time localiser's answer.

Samples are dicts of float32 tensors: ``depth`` / ``real`` / ``synth`` (1, S, S) in [-1, 1],
``joints_n`` (14, 3) crop-normalised metric joints ((p - centre) / (cube / 2), camera frame),
``center_c_m`` (3,), ``cube_m`` (), ``angle_rad`` (), ``K`` (3, 3). ``crops.crop_to_joints``
with the sample's transform (:func:`transform_of`) maps predictions back to metres.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from featmap_ros.crops import DepthCropTransform, augment_depth_crop, crop_depth, depth_crop_transform, joints_to_crop
from featmap_ros.data.nyu import NyuDataset, eval_joints, load_depth_mm, nyu_K
from featmap_ros.data.specs import NYU_EVAL_JOINTS
from featmap_ros.errors import InputError
from featmap_ros.hand_localiser import localise_hand, refined_com_m
from featmap_ros.render.hand import PALM_CENTER, sample_hand
from featmap_ros.render.hand_depth import render_hand_depth


def _sample_dict(crop: np.ndarray, joints_c_m: np.ndarray, T: DepthCropTransform, key: str = "depth") -> dict:
    return {
        key: torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None],
        "joints_n": torch.from_numpy(joints_to_crop(joints_c_m, T).astype(np.float32)),
        "center_c_m": torch.from_numpy(T.center_c_m.astype(np.float32)),
        "cube_m": torch.tensor(T.cube_m, dtype=torch.float32),
        "angle_rad": torch.tensor(T.angle_rad, dtype=torch.float32),
        "K": torch.from_numpy(T.K.astype(np.float32)),
    }


def transform_of(sample: dict, size: int, index: int | None = None) -> DepthCropTransform:
    """Rebuild the :class:`DepthCropTransform` of a (possibly batched, then ``index``) sample."""
    def get(k):
        v = sample[k]
        v = v[index] if index is not None else v
        return v.detach().cpu().numpy().astype(np.float64)

    return depth_crop_transform(get("center_c_m"), get("K"), float(get("cube_m")), size, float(get("angle_rad")))


class SyntheticHandCrops(IterableDataset):
    """Endless synthetic DeepPrior crops of random hands, rendered online.

    Args:
        size: crop side, pixels (128; the demo uses 64).
        cube_m: cube side, metres.
        seed: base seed; worker ``w`` of a DataLoader uses ``seed + 1000003 * (w + 1)``.
        augment: DeepPrior++ augmentation (centre offset, in-plane rotation, cube scale).
        K: intrinsics (default NYU's); width, height: image size.
        length: number of samples per epoch (None = endless).
    """

    def __init__(self, size: int = 128, cube_m: float = 0.3, seed: int = 0, augment: bool = True, K: np.ndarray | None = None, width: int = 640, height: int = 480, length: int | None = None) -> None:
        super().__init__()
        self.size = int(size)
        self.cube_m = float(cube_m)
        self.seed = int(seed)
        self.augment = augment
        self.K = nyu_K() if K is None else np.asarray(K, dtype=np.float64)
        self.width, self.height = int(width), int(height)
        self.length = length

    def sample(self, rng: np.random.Generator) -> dict:
        """One sample drawn with ``rng``."""
        hand = sample_hand(rng, self.K, self.width, self.height)
        depth = render_hand_depth(hand, self.K, self.width, self.height)
        J36 = hand.joints_c_m()
        center, cube, angle = J36[PALM_CENTER], self.cube_m, 0.0
        if self.augment:
            center, cube, angle = augment_depth_crop(rng, center, self.cube_m)
        crop, T = crop_depth(depth, center, self.K, cube, self.size, angle)
        return _sample_dict(crop, J36[list(NYU_EVAL_JOINTS)], T)

    def __iter__(self):
        info = get_worker_info()
        k, n = (0, 1) if info is None else (info.id, info.num_workers)
        rng = np.random.default_rng(self.seed + 1000003 * (0 if info is None else info.id + 1))
        count = None if self.length is None else (self.length - k + n - 1) // n
        i = 0
        while count is None or i < count:
            yield self.sample(rng)
            i += 1


def _palm_centre(frame) -> np.ndarray:
    return frame.joints_c_m[PALM_CENTER]


class NyuPairCrops(Dataset):
    """Real/synthetic pairs of an NYU-layout split, cropped with the same cube.

    Args:
        root: folder with ``train/`` and/or ``test/``.
        split: ``train`` or ``test``.
        size: crop side, pixels.
        cube_m: cube side, metres.
        augment: apply the same random augmentation to both images of a pair.
        seed: seed of the augmentation (sample ``i`` uses ``seed``, ``i`` and torch's initial seed,
            so it is reproducible after ``torch.manual_seed`` and differs between epochs of
            DataLoader workers).
        indices: optional subset of frame indices (e.g. a few thousand "real" frames).
        centre: ``palm`` (the palm-centre joint) or ``com`` (the refined centre of mass of the
            *real* image, seeded at the palm centre: the centre the run-time estimator computes).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", size: int = 128, cube_m: float = 0.3, augment: bool = False, seed: int = 0,
                 indices: list[int] | None = None, centre: str = "palm") -> None:
        if centre not in ("palm", "com"):
            raise InputError(f"centre: expected 'palm' or 'com', got {centre!r}")
        self.ds = NyuDataset(root, split)
        self.size, self.cube_m, self.augment, self.seed, self.centre = int(size), float(cube_m), augment, int(seed), centre
        self.indices = list(range(len(self.ds))) if indices is None else [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        i = self.indices[k]
        f = self.ds[i]
        real_m = load_depth_mm(f.depth_path) / 1000.0
        center, cube, angle = _palm_centre(f), self.cube_m, 0.0
        if self.centre == "com":
            center = refined_com_m(real_m, self.ds.K, center, self.cube_m)
        if self.augment:
            rng = np.random.default_rng([self.seed, i, torch.initial_seed() % (2**32)])
            center, cube, angle = augment_depth_crop(rng, center, self.cube_m)
        real, T = crop_depth(real_m, center, self.ds.K, cube, self.size, angle)
        synth, _ = crop_depth(load_depth_mm(f.synth_path) / 1000.0, center, self.ds.K, cube, self.size, angle)
        out = _sample_dict(real, eval_joints(f), T, key="real")
        out["synth"] = torch.from_numpy(synth)[None]
        out["index"] = torch.tensor(i)
        return out


class NyuEvalCrops(Dataset):
    """Crops of an NYU-layout split for evaluation (no augmentation).

    Args:
        root: folder with the split.
        split: ``train`` or ``test``.
        size: crop side, pixels.
        cube_m: cube side, metres.
        center: ``gt`` (palm centre joint) or ``detect`` (:func:`crops.localise_hand`; frames
            where nothing is found fall back to the ground truth and are flagged).
        synthetic: crop the ``synthdepth_*`` images instead of the real ones.
    """

    def __init__(self, root: str | os.PathLike, split: str = "test", size: int = 128, cube_m: float = 0.3, center: str = "gt", synthetic: bool = False) -> None:

        if center not in ("gt", "detect"):
            raise InputError(f"center: expected 'gt' or 'detect', got {center!r}")
        self.ds = NyuDataset(root, split)
        self.size, self.cube_m, self.center, self.synthetic = int(size), float(cube_m), center, synthetic

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        f = self.ds[i]
        depth_m = load_depth_mm(f.synth_path if self.synthetic else f.depth_path) / 1000.0
        c = _palm_centre(f)
        found = True
        if self.center == "detect":
            det = localise_hand(depth_m, self.ds.K, cube_m=self.cube_m)
            found = det is not None
            c = det if found else c
        crop, T = crop_depth(depth_m, c, self.ds.K, self.cube_m, self.size)
        out = _sample_dict(crop, eval_joints(f), T)
        out["joints_c_m"] = torch.from_numpy(eval_joints(f).astype(np.float32))
        out["index"] = torch.tensor(i)
        out["detected"] = torch.tensor(found)
        return out
