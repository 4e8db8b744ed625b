"""Dense correspondences of the ``coords`` pose head: targets, symmetries and PnP-RANSAC decoding.

For each cell of a crop (stride :data:`COORDS_STRIDE` of the crop pixels) the ``coords`` head
predicts a visible-mask logit and the 3D point of the object's surface seen there, in the model
frame, normalised to the model's box (``(X - box_min_m) / box_size_m``, so [0, 1] on each axis;
the references are Pix2Pose, CDPN, GDR-Net). The pose is PnP-RANSAC (OpenCV) over the cells the
mask calls visible.

Targets come from the renderer's depth buffer: a pixel's depth and the crop intrinsics give the
camera-frame point, and the known pose takes it into the model frame (exact; no second draw).
Symmetric objects: a coordinate map is ambiguous up to the model's symmetries, so the training
loss takes, per sample, the smallest error over the symmetric versions of the target
(:func:`symmetry_affines`), as Pix2Pose's transformer loss does.

Shapes: output maps are (4, h, w) per object: channel 0 the mask logit, 1-3 the normalised
coordinates; ``h = w = crop side // COORDS_STRIDE``.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from featmap_ros import crops, geometry
from featmap_ros.errors import InputError

#: Crop pixels per output cell of the ``coords`` head.
COORDS_STRIDE = 4
#: Continuous symmetries are discretised into this many rotations for the training loss.
CONTINUOUS_SYMMETRY_STEPS = 16
#: A cell is used for PnP when its visible-mask probability exceeds this.
MASK_THRESHOLD = 0.5
#: PnP-RANSAC: inlier threshold as a fraction of the crop window's side (full-image pixels).
RANSAC_REPROJ_FRAC = 0.03
RANSAC_ITERATIONS = 150
#: Fewest confident cells PnP is tried with.
MIN_CORRESPONDENCES = 6


def model_coords_from_depth(depth_m: np.ndarray, mask: np.ndarray, K_crop: np.ndarray, R_m2c: np.ndarray,
                            t_m2c_m: np.ndarray) -> np.ndarray:
    """Model-frame surface points of a rendered crop (the coordinate pass).

    Args:
        depth_m: (S, S) float32 z depth of the render, metres (0 outside the silhouette).
        mask: (S, S) bool silhouette of the render.
        K_crop: (3, 3) intrinsics of the crop (:func:`featmap_ros.render.renderer.crop_intrinsics`).
        R_m2c, t_m2c_m: the rendered pose, (3, 3) and (3,) metres.

    Returns:
        (S, S, 3) float32 model-frame points, metres; 0 outside ``mask``.
    """
    d = np.asarray(depth_m, np.float64)
    if d.ndim != 2 or np.shape(mask) != d.shape:
        raise InputError(f"model_coords_from_depth: depth {d.shape} and mask {np.shape(mask)} must be the same (S, S)")
    R, t = geometry.check_pose(R_m2c, t_m2c_m)
    h, w = d.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(geometry.check_K(K_crop)).T  # (S, S, 3), z = 1
    p_c = rays * d[..., None]
    p_m = (p_c - t) @ R  # R^T (p - t), row vectors
    out = np.where(np.asarray(mask, bool)[..., None], p_m, 0.0)
    return out.astype(np.float32)


def normalise_coords(points_m: np.ndarray, box_min_m: np.ndarray, box_size_m: np.ndarray) -> np.ndarray:
    """(..., 3) model-frame metres -> (..., 3) box-normalised coordinates ([0, 1] inside the box)."""
    return (np.asarray(points_m, np.float64) - np.asarray(box_min_m, np.float64)) / np.asarray(box_size_m, np.float64)


def denormalise_coords(coords_n: np.ndarray, box_min_m: np.ndarray, box_size_m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalise_coords`: (..., 3) normalised -> (..., 3) model-frame metres."""
    return np.asarray(box_min_m, np.float64) + np.asarray(coords_n, np.float64) * np.asarray(box_size_m, np.float64)


def coords_targets(depth_m: np.ndarray, mask: np.ndarray, visible: np.ndarray, K_crop: np.ndarray, R_m2c: np.ndarray,
                   t_m2c_m: np.ndarray, box_min_m: np.ndarray, box_size_m: np.ndarray,
                   stride: int = COORDS_STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """Training targets of one crop at the head's resolution.

    Each output cell averages the ``stride x stride`` crop pixels it covers: the normalised
    coordinates over the cell's visible pixels, and the visible fraction.

    Args:
        depth_m, mask: the target object's render, (S, S) metres and bool silhouette.
        visible: (S, S) bool pixels of the silhouette left visible (occluders, cut-outs removed).
        K_crop, R_m2c, t_m2c_m: crop intrinsics and the pose.
        box_min_m, box_size_m: (3,) the model box (``ModelInfo.min_m``, ``size_m``).
        stride: crop pixels per output cell; S must be a multiple of it.

    Returns:
        (coords_n (3, h, w) float32 in about [0, 1], 0 where nothing is visible;
        visible_frac (h, w) float32 in [0, 1]).
    """
    S = np.shape(depth_m)[0]
    if S % stride:
        raise InputError(f"coords_targets: crop side {S} is not a multiple of the stride {stride}")
    vis = np.asarray(visible, bool) & np.asarray(mask, bool)
    xyz_n = normalise_coords(model_coords_from_depth(depth_m, mask, K_crop, R_m2c, t_m2c_m), box_min_m, box_size_m)
    h = S // stride
    wv = vis.reshape(h, stride, h, stride).astype(np.float64)
    n = wv.sum(axis=(1, 3))
    summed = (xyz_n * vis[..., None]).reshape(h, stride, h, stride, 3).sum(axis=(1, 3))
    c = np.where(n[..., None] > 0, summed / np.maximum(n, 1)[..., None], 0.0)
    return np.ascontiguousarray(c.transpose(2, 0, 1), dtype=np.float32), (n / stride**2).astype(np.float32)


@dataclass(frozen=True)
class SymmetryAffines:
    """An object's symmetries acting on normalised coordinates: ``c' = A c + b``.

    Attributes:
        A: (n, 3, 3) float32, the identity first.
        b: (n, 3) float32.
    """

    A: np.ndarray
    b: np.ndarray


def symmetry_affines(box_min_m: np.ndarray, box_size_m: np.ndarray, discrete=(), continuous=(),
                     continuous_steps: int = CONTINUOUS_SYMMETRY_STEPS) -> SymmetryAffines:
    """The symmetries of a model on its box-normalised coordinates.

    A symmetry ``X -> R X + t`` of the model becomes ``c -> D^-1 R D c + D^-1 (R m + t - m)`` with
    ``D = diag(box_size_m)``, ``m = box_min_m``. Discrete symmetries are taken as listed;
    each continuous one (axis through an offset) as ``continuous_steps`` rotations, combined with
    the discrete ones.

    Args:
        box_min_m, box_size_m: (3,) the model box, metres.
        discrete: (4, 4) model-frame transforms, translation in metres
            (:attr:`featmap_ros.data.bop.ModelInfo.symmetries_discrete`).
        continuous: ``{"axis": (3,), "offset_m": (3,)}`` entries (``ModelInfo.symmetries_continuous``).
    """
    m = np.asarray(box_min_m, np.float64).reshape(3)
    D = np.asarray(box_size_m, np.float64).reshape(3)
    if not np.all(D > 0):
        raise InputError(f"symmetry_affines: box sizes must be positive, got {D.tolist()}")
    disc = [(np.eye(3), np.zeros(3))] + [(np.asarray(T, np.float64)[:3, :3], np.asarray(T, np.float64)[:3, 3]) for T in discrete]
    cont = []
    for s in continuous:
        axis = np.asarray(s["axis"], np.float64)
        off = np.asarray(s.get("offset_m", np.zeros(3)), np.float64)
        for k in range(continuous_steps):
            Rk = cv2.Rodrigues(axis / np.linalg.norm(axis) * (2 * np.pi * k / continuous_steps))[0]
            cont.append((Rk, off - Rk @ off))
    both = disc if not cont else [(Rc @ Rd, Rc @ td + tc) for Rd, td in disc for Rc, tc in cont]
    A = np.stack([(R * D[None, :]) / D[:, None] for R, _ in both])  # D^-1 R D
    b = np.stack([(R @ m + t - m) / D for R, t in both])
    return SymmetryAffines(A.astype(np.float32), b.astype(np.float32))


def cell_centres_px(window: crops.Window, cells: int) -> np.ndarray:
    """(cells, cells, 2) full-image pixel (u, v) of the centres of a ``cells x cells`` output grid
    over the crop window (cell (i, j) = row i, column j)."""
    g = (np.arange(cells, dtype=np.float64) + 0.5) / cells * 2.0 - 1.0  # crop-normalised centres
    uu, vv = np.meshgrid(g, g)
    return crops.crop_normalised_to_image(np.stack([uu, vv], -1), window)


@dataclass(frozen=True)
class CoordsPose:
    """A pose decoded from a coordinate map.

    Attributes:
        R_m2c: (3, 3) float64; t_m2c_m: (3,) float64, metres.
        n_confident: cells above the mask threshold (the PnP candidates).
        n_inliers: RANSAC inliers among them.
        visible_frac: mean mask probability over the crop.
    """

    R_m2c: np.ndarray
    t_m2c_m: np.ndarray
    n_confident: int
    n_inliers: int
    visible_frac: float


def pose_from_coords(maps: np.ndarray, window: crops.Window, K: np.ndarray, box_min_m: np.ndarray,
                     box_size_m: np.ndarray, mask_threshold: float = MASK_THRESHOLD) -> CoordsPose:
    """PnP-RANSAC over the confident cells of one object's output.

    Args:
        maps: (4, h, w) float: mask logit and normalised coordinates (the head's output).
        window: the crop window in full-image pixels.
        K: (3, 3) full-image intrinsics.
        box_min_m, box_size_m: (3,) the model box the coordinates are normalised to.
        mask_threshold: mask probability above which a cell is a correspondence.

    Returns:
        :class:`CoordsPose`.

    Raises:
        InputError: fewer than :data:`MIN_CORRESPONDENCES` confident cells, or no PnP solution.
    """
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3 or maps.shape[0] != 4 or maps.shape[1] != maps.shape[2]:
        raise InputError(f"pose_from_coords: expected (4, h, h) maps, got {maps.shape}")
    prob = 1.0 / (1.0 + np.exp(-maps[0].astype(np.float64)))
    sel = prob > mask_threshold
    n = int(sel.sum())
    if n < MIN_CORRESPONDENCES:
        raise InputError(f"coords: {n} confident cells (< {MIN_CORRESPONDENCES}): object not seen in the window")
    uv = cell_centres_px(window, maps.shape[1])[sel]
    xyz = denormalise_coords(np.clip(maps[1:].transpose(1, 2, 0)[sel], -0.1, 1.1), box_min_m, box_size_m)
    K = geometry.check_K(K)
    ok, rvec, tvec, inl = cv2.solvePnPRansac(xyz, uv, K, None, iterationsCount=RANSAC_ITERATIONS,
                                            reprojectionError=max(RANSAC_REPROJ_FRAC * window.side, 1.0),
                                            confidence=0.99, flags=cv2.SOLVEPNP_EPNP)
    if not ok or inl is None or len(inl) < 4:
        raise InputError("coords: PnP-RANSAC found no pose")
    idx = inl.reshape(-1)
    rvec, tvec = cv2.solvePnPRefineLM(xyz[idx], uv[idx], K, None, rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    t = tvec.reshape(3).astype(np.float64)
    if t[2] <= 0 or not np.all(np.isfinite(t)):
        raise InputError("coords: PnP put the object behind the camera")
    return CoordsPose(R, t, n, int(len(idx)), float(prob.mean()))


# ----------------------------------------------------------------------------- training loss


@dataclass(frozen=True)
class SymmetryTables:
    """Every object's :class:`SymmetryAffines`, padded to one size, as tensors for the loss.

    Attributes:
        A: (n_objects, n_max, 3, 3) float32; b: (n_objects, n_max, 3) float32.
        valid: (n_objects, n_max) bool (padding entries are False).
    """

    A: torch.Tensor
    b: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def from_meta(cls, meta: dict, where: str = "meta") -> "SymmetryTables":
        """From an object checkpoint's ``meta`` of ``head: coords`` (``coords_box_min_m``,
        ``coords_box_size_m``, ``symmetries_discrete``, ``symmetries_continuous``).

        Raises:
            InputError: a meta without the coordinate range (naming the field).
        """
        for key in ("coords_box_min_m", "coords_box_size_m"):
            if key not in meta:
                raise InputError(f"{where}: field {key!r} missing: a coords head needs each object's coordinate range "
                                 "(the model box its coordinates are normalised to)")
        n = len(meta["coords_box_min_m"])
        disc = meta.get("symmetries_discrete") or [[] for _ in range(n)]
        cont = meta.get("symmetries_continuous") or [[] for _ in range(n)]
        affs = [symmetry_affines(meta["coords_box_min_m"][k], meta["coords_box_size_m"][k], disc[k], cont[k]) for k in range(n)]
        n_max = max(len(a.A) for a in affs)
        A = np.tile(np.eye(3, dtype=np.float32), (n, n_max, 1, 1))
        b = np.zeros((n, n_max, 3), np.float32)
        valid = np.zeros((n, n_max), bool)
        for k, a in enumerate(affs):
            A[k, :len(a.A)], b[k, :len(a.A)], valid[k, :len(a.A)] = a.A, a.b, True
        return cls(torch.from_numpy(A), torch.from_numpy(b), torch.from_numpy(valid))

    def to(self, device) -> "SymmetryTables":
        return SymmetryTables(self.A.to(device), self.b.to(device), self.valid.to(device))


def coords_loss(pred: torch.Tensor, coords_n: torch.Tensor, mask_visib: torch.Tensor, obj_index: torch.Tensor | None,
                sym: SymmetryTables, with_mask: bool = True) -> torch.Tensor:
    """Loss of the ``coords`` head: BCE of the visible mask + L1 of the coordinates, symmetry-aware.

    The coordinate term is the mean absolute error over the cells whose visible fraction is above
    one half, taken per sample against every symmetric version of the target (``A c + b``) and
    the smallest kept (Pix2Pose's transformer loss): a symmetric object is not penalised for
    predicting the coordinates of an equivalent pose.

    Args:
        pred: (B, n_objects, 4, h, w) the head's output.
        coords_n: (B, 3, h, w) target normalised coordinates.
        mask_visib: (B, h, w) target visible fraction in [0, 1] (also selects the coordinate cells).
        obj_index: (B,) int64 object of each sample (None = object 0).
        sym: the objects' :class:`SymmetryTables` (on ``pred``'s device).
        with_mask: include the mask term (off for real crops, whose occlusion is unknown).

    Returns:
        Scalar loss.
    """
    B = pred.shape[0]
    idx = torch.zeros(B, dtype=torch.long, device=pred.device) if obj_index is None else obj_index.to(pred.device)
    out = pred[torch.arange(B, device=pred.device), idx].float()  # (B, 4, h, w)
    y = coords_n.to(out.device).float()
    m = mask_visib.to(out.device).float()
    A, b, valid = sym.A[idx], sym.b[idx], sym.valid[idx]  # (B, n, 3, 3), (B, n, 3), (B, n)
    alt = torch.einsum("bnij,bjhw->bnihw", A, y) + b[..., None, None]  # (B, n, 3, h, w)
    w = (m > 0.5).float()[:, None, None]  # (B, 1, 1, h, w)
    err = ((out[:, None, 1:] - alt).abs() * w).sum(dim=(2, 3, 4)) / (3.0 * w.sum(dim=(2, 3, 4)) + 1e-6)  # (B, n)
    err = torch.where(valid, err, torch.full_like(err, float("inf"))).min(dim=1).values
    has = (w.sum(dim=(1, 2, 3, 4)) > 0).float()
    loss = (err * has).sum() / has.sum().clamp(min=1.0)
    if with_mask:
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], m)
    return loss
