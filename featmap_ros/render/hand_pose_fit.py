"""Joint angles of our hand fitted to public real hand-pose labels (inverse kinematics), and the
bundled table of fitted angles that training samples poses from.

Why: hand-picked base poses plus Gaussian noise are not the poses people make; real label sets
are. The ICVL test labels (Tang et al. 2014; 1596 frames, 16 joints as (u, v, d), published in
xinghaochen/awesome-hand-pose-estimation ``evaluation/groundtruth/icvl``) are read from a path the
user gives, never shipped. Each frame is fitted by :func:`fit_icvl_frame`: the hand's global
rotation and its (5, 4) joint angles (:mod:`featmap_ros.render.hand`) by bounded least squares
(scipy) on bone *directions*, which are free of the two skeletons' different proportions and of
ICVL's joint placement; our forward kinematics then gives the pose in NYU's 36-joint layout (the
retargeting). What is bundled (:data:`BUNDLED_TABLE`) is the fitted angle table only, with its
origin in the file.

NYU's labels are never read here: they are the test.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from featmap_ros import atomic
from featmap_ros.errors import InputError
from featmap_ros.render.hand import ANGLE_LIMITS_RAD, HandShape, anatomic_shape, clip_angles, finger_chains_h

#: ICVL's camera (the evaluation collection's ``util.py``): fx, fy, cx, cy; y grows downwards.
ICVL_INTRINSICS = (240.99, 240.96, 160.0, 120.0)
#: ICVL's 16 joints: palm, then thumb, index, middle, ring, pinky, each (root, mid, tip).
ICVL_JOINTS = 16
#: our finger index (0 pinky .. 3 index, 4 thumb) of ICVL's fingers in file order.
ICVL_FINGER_ORDER = (4, 3, 2, 1, 0)
#: the bundled table (fitted angles, no labels).
BUNDLED_TABLE = Path(__file__).resolve().parent / "data" / "icvl_fitted_angles.npz"
#: ICVL's test sequences: frames [0, 702) are sequence A, [702, 1596) sequence B.
ICVL_SEQUENCE_SPLIT = 702
#: weight of the DIP-PIP coupling (tip flexion ~ 2/3 of the middle one, as in a real finger;
#: ICVL has no DIP joint, so the data cannot tell the two apart).
DIP_COUPLING = 0.3


def read_icvl_labels(path: str | os.PathLike) -> np.ndarray:
    """ICVL labels in the published format: one frame per line, 16 x (u, v, d), d in mm.

    Returns:
        (N, 16, 3) float64 joints in ICVL's camera frame (x right, y down, z forward), metres.

    Raises:
        InputError: missing file, a line with another number of values (names the line).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such ICVL label file")
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            vals = [float(v) for v in line.split()]
        except ValueError:
            raise InputError(f"{p}: line {n}: not numbers") from None
        if len(vals) != ICVL_JOINTS * 3:
            raise InputError(f"{p}: line {n}: expected {ICVL_JOINTS * 3} values (16 joints x u, v, d), got {len(vals)}")
        rows.append(vals)
    if not rows:
        raise InputError(f"{p}: no frames")
    uvd = np.array(rows).reshape(-1, ICVL_JOINTS, 3)
    fx, fy, cx, cy = ICVL_INTRINSICS
    z = uvd[..., 2] / 1000.0
    return np.stack([(uvd[..., 0] - cx) * z / fx, (uvd[..., 1] - cy) * z / fy, z], axis=-1)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _icvl_directions(J: np.ndarray) -> np.ndarray:
    """(16, 3) ICVL joints -> (15, 3) unit directions: per our finger f (pinky..index, thumb):
    palm->root, root->mid, mid->tip."""
    out = np.zeros((5, 3, 3))
    for k, f in enumerate(ICVL_FINGER_ORDER):
        root, mid, tip = J[1 + 3 * k], J[2 + 3 * k], J[3 + 3 * k]
        out[f] = _unit(np.stack([root - J[0], mid - root, tip - mid]))
    return out.reshape(15, 3)


def _model_points(shape: HandShape, angles: np.ndarray) -> np.ndarray:
    """(5, 3, 3) our points matching ICVL's palm->root, root->mid, mid->tip per finger: palm centre,
    then fingers (MCP, PIP, tip) and thumb (MCP, IP, tip)."""
    ch = finger_chains_h(shape, angles)
    palm = shape.palm_joints_m[2] * shape.scale
    out = np.zeros((5, 4, 3))
    for f in range(5):
        pts = ch[f, 1:] if f == 4 else ch[f, [0, 1, 3]]
        out[f] = np.concatenate([palm[None], pts])
    return out


def _model_directions(shape: HandShape, angles: np.ndarray) -> np.ndarray:
    P = _model_points(shape, angles)
    return _unit(P[:, 1:] - P[:, :-1]).reshape(15, 3)


@dataclass(frozen=True)
class FitResult:
    """One frame's fit: ``angles_rad`` (5, 4), ``R_h2c`` (3, 3), mean bone-direction error, degrees."""

    angles_rad: np.ndarray
    R_h2c: np.ndarray
    direction_error_deg: float


def _kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation R minimising |R a_i - b_i| over centred point sets (N, 3)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    U, _, Vt = np.linalg.svd(a.T @ b)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    return Vt.T @ D @ U.T


def fit_icvl_frame(J_c_m: np.ndarray, shape: HandShape | None = None, init: FitResult | None = None) -> FitResult:
    """Fit the global rotation and the joint angles of our hand to one ICVL frame.

    Residuals: the 15 bone directions (palm->root weighted 0.5: our palm centre is not ICVL's),
    plus the DIP-PIP coupling; angles bounded by :data:`~featmap_ros.render.hand.ANGLE_LIMITS_RAD`.

    Args:
        J_c_m: (16, 3) ICVL joints, metres.
        shape: our hand (default :func:`~featmap_ros.render.hand.anatomic_shape`).
        init: a previous frame's fit to start from (sequences are continuous).

    Returns:
        :class:`FitResult`.
    """
    J = np.asarray(J_c_m, dtype=np.float64)
    if J.shape != (ICVL_JOINTS, 3) or not np.all(np.isfinite(J)):
        raise InputError(f"J_c_m: expected finite (16, 3), got shape {J.shape}")
    shape = anatomic_shape() if shape is None else shape
    target = _icvl_directions(J)
    w = np.ones(15)
    w[0::3] = 0.5
    lo, hi = ANGLE_LIMITS_RAD[..., 0].ravel(), ANGLE_LIMITS_RAD[..., 1].ravel()
    if init is None:
        a0 = np.clip(np.tile([0.0, 0.3, 0.3, 0.2], 5), lo, hi)
        # rotation from the palm and the four finger roots
        P = _model_points(shape, a0.reshape(5, 4))
        mine = np.concatenate([P[0, 0][None], P[:4, 1]])
        theirs = np.concatenate([J[0][None], J[[13, 10, 7, 4]]])
        r0 = Rotation.from_matrix(_kabsch(mine, theirs)).as_rotvec()
    else:
        a0 = np.clip(init.angles_rad.ravel(), lo, hi)
        r0 = Rotation.from_matrix(init.R_h2c).as_rotvec()

    def residual(x: np.ndarray) -> np.ndarray:
        R = Rotation.from_rotvec(x[:3]).as_matrix()
        a = x[3:].reshape(5, 4)
        d = _model_directions(shape, a) @ R.T
        res = ((d - target) * w[:, None]).ravel()
        coupling = DIP_COUPLING * (a[:4, 3] - (2.0 / 3.0) * a[:4, 2])
        return np.concatenate([res, coupling])

    x0 = np.concatenate([r0, a0])
    big = np.full(3, np.inf)
    sol = least_squares(residual, x0, bounds=(np.concatenate([-big, lo]), np.concatenate([big, hi])), x_scale=1.0, max_nfev=200)
    R = Rotation.from_rotvec(sol.x[:3]).as_matrix()
    a = clip_angles(sol.x[3:].reshape(5, 4))
    d = _model_directions(shape, a) @ R.T
    err = np.degrees(np.arccos(np.clip(np.sum(d * target, axis=1), -1.0, 1.0)))
    return FitResult(a, R, float(err[np.arange(15) % 3 != 0].mean()))


def fit_icvl_file(path: str | os.PathLike, progress: bool = True, max_frames: int = 0) -> dict:
    """Fit every frame of an ICVL label file (:func:`read_icvl_labels`, :func:`fit_icvl_frame`).

    Returns:
        {"angles_rad": (N, 5, 4) float32, "rotvec_h2c": (N, 3) float32 (in ICVL's camera),
        "direction_error_deg": (N,) float32, "sequence": (N,) int8 (0 = A, 1 = B)}.
    """
    from tqdm import tqdm

    J = read_icvl_labels(path)
    if max_frames:
        J = J[:max_frames]
    out_a, out_r, out_e = [], [], []
    prev = None
    for n in tqdm(range(len(J)), desc="fit ICVL", disable=not progress, dynamic_ncols=True):
        start = None if n == ICVL_SEQUENCE_SPLIT else prev  # a new sequence starts afresh
        res = fit_icvl_frame(J[n], init=start)
        if start is not None and res.direction_error_deg > 12.0:  # a jump in the sequence: try afresh
            res2 = fit_icvl_frame(J[n])
            res = res2 if res2.direction_error_deg < res.direction_error_deg else res
        prev = res
        out_a.append(res.angles_rad)
        out_r.append(Rotation.from_matrix(res.R_h2c).as_rotvec())
        out_e.append(res.direction_error_deg)
    seq = (np.arange(len(J)) >= ICVL_SEQUENCE_SPLIT).astype(np.int8)
    return {"angles_rad": np.array(out_a, np.float32), "rotvec_h2c": np.array(out_r, np.float32),
            "direction_error_deg": np.array(out_e, np.float32), "sequence": seq}


ORIGIN = ("Joint angles of featmap_ros's hand model (render/hand.py, anatomic_shape) fitted by "
          "featmap_ros.render.hand_pose_fit to the ICVL hand-pose test labels (Tang et al., CVPR 2014; "
          "file evaluation/groundtruth/icvl/icvl_test_groundtruth_label.txt of "
          "github.com/xinghaochen/awesome-hand-pose-estimation). Labels are not included; NYU labels were not used.")


def write_table(table: dict, out: str | os.PathLike) -> Path:
    """Write a fitted table (:func:`fit_icvl_file`) with its origin, atomically; returns the path."""
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, origin=np.array(ORIGIN), **table)
    out = Path(out)
    atomic.write_bytes(out, buf.getvalue())
    return out


@dataclass(frozen=True)
class PoseTable:
    """Fitted joint angles to sample training poses from.

    Attributes:
        angles_rad: (N, 5, 4) float64.
        sequence: (N,) int, which source sequence each row came from.
        origin: where the angles come from.
    """

    angles_rad: np.ndarray
    sequence: np.ndarray
    origin: str

    def subset(self, sequence: int | None) -> "PoseTable":
        """The rows of one source sequence (None = all)."""
        if sequence is None:
            return self
        keep = self.sequence == sequence
        if not keep.any():
            raise InputError(f"pose table: no rows of sequence {sequence} (has {sorted(set(self.sequence.tolist()))})")
        return PoseTable(self.angles_rad[keep], self.sequence[keep], self.origin)


def load_table(path: str | os.PathLike = BUNDLED_TABLE) -> PoseTable:
    """Read a fitted angle table (:func:`write_table`).

    Raises:
        InputError: missing file or field, wrong shapes (names the field).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such pose table")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # numpy raises several kinds for a bad file
        raise InputError(f"{p}: unreadable pose table ({e.__class__.__name__}: {e})") from None
    for key in ("angles_rad", "sequence", "origin"):
        if key not in data:
            raise InputError(f"{p}: field {key!r} missing")
    a = np.asarray(data["angles_rad"], dtype=np.float64)
    if a.ndim != 3 or a.shape[1:] != (5, 4) or len(a) == 0:
        raise InputError(f"{p}: field 'angles_rad': expected (N, 5, 4), got {a.shape}")
    seq = np.asarray(data["sequence"]).astype(np.int64).reshape(-1)
    if len(seq) != len(a):
        raise InputError(f"{p}: field 'sequence' has {len(seq)} rows for {len(a)} angle rows")
    return PoseTable(a, seq, str(data["origin"]))


def sample_table_articulation(rng: np.random.Generator, table: PoseTable, sigma_rad: float = 0.08) -> np.ndarray:
    """A row of the table plus Gaussian noise of ``sigma_rad`` on every angle, clipped to the limits: (5, 4)."""
    row = table.angles_rad[int(rng.integers(len(table.angles_rad)))]
    return clip_angles(row + rng.normal(0.0, sigma_rad, size=(5, 4)))
