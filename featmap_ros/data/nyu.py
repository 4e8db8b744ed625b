"""The NYU hand pose dataset as it is on disk, read lazily; and a writer of the same layout.

Layout of ``<root>/train`` and ``<root>/test``:

- ``depth_<view>_<frame:07d>.png``: depth in mm = G * 256 + B (R unused); 0 and 32001 invalid;
- ``synthdepth_<view>_<frame:07d>.png``: the dataset's own synthetic render of the frame, same
  encoding;
- ``rgb_<view>_<frame:07d>.png`` (not read here);
- ``joint_data.mat``: ``joint_uvd`` and ``joint_xyz`` (views x frames x 36 x 3; uvd in pixels and
  mm, xyz in mm with y UP: x = (u - cx) d / fx, y = (cy - v) d / fy, z = d) and ``joint_names``.

Frames are numbered from 1. Everything this module returns is in the camera OPTICAL frame
(x right, y down, z forward) in metres: NYU's y-up millimetres are converted here, once.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from featmap_ros import atomic
from featmap_ros.data.specs import NYU_EVAL_JOINTS, hand_dataset
from featmap_ros.errors import InputError
from featmap_ros.render.hand import NYU_JOINT_NAMES

NYU_INVALID_MM = 32001
SPLITS = ("train", "test")


def nyu_K() -> np.ndarray:
    """(3, 3) float64 NYU intrinsics, pixels."""
    s = hand_dataset("nyu")
    return np.array([[s.fx, 0.0, s.cx], [0.0, s.fy, s.cy], [0.0, 0.0, 1.0]])


def depth_name(view: int, frame: int, synth: bool = False) -> str:
    """File name of a frame's depth PNG, e.g. ``depth_1_0000001.png`` (frames from 1)."""
    return f"{'synthdepth' if synth else 'depth'}_{view}_{frame:07d}.png"


def load_depth_mm(path: str | os.PathLike) -> np.ndarray:
    """Read an NYU depth PNG.

    Args:
        path: ``depth_*`` or ``synthdepth_*`` PNG (RGB, mm = G * 256 + B).

    Returns:
        (H, W) float32 millimetres, 0 = invalid (0 and 32001 on disk).

    Raises:
        InputError: naming the file, when it is missing, truncated or not an RGB PNG.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"{p}: cannot read depth PNG ({e.strerror or e})") from None
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or not data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"):
        raise InputError(f"{p}: not a complete PNG file (truncated or another format)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{p}: PNG could not be decoded")
    if img.ndim != 3 or img.shape[2] < 3:
        raise InputError(f"{p}: expected an RGB PNG (depth in G and B), got shape {img.shape}")
    if img.dtype != np.uint8:
        raise InputError(f"{p}: expected 8-bit channels, got {img.dtype}")
    # OpenCV gives BGR: channel 0 = B, 1 = G
    mm = img[:, :, 1].astype(np.int32) * 256 + img[:, :, 0].astype(np.int32)
    mm[mm == NYU_INVALID_MM] = 0
    return mm.astype(np.float32)


def encode_depth_png(depth_mm: np.ndarray) -> bytes:
    """PNG bytes of a depth map in NYU's encoding (R = 0, G = mm // 256, B = mm % 256)."""
    d = np.asarray(depth_mm, dtype=np.float64)
    if d.ndim != 2:
        raise InputError(f"depth_mm: expected (H, W), got {d.shape}")
    mm = np.where(np.isfinite(d) & (d > 0), np.round(d), 0).astype(np.int64)
    if mm.max(initial=0) >= 65536:
        raise InputError(f"depth_mm: values up to {mm.max()} mm do not fit 16 bits")
    bgr = np.zeros(d.shape + (3,), np.uint8)
    bgr[:, :, 0] = (mm & 255).astype(np.uint8)
    bgr[:, :, 1] = (mm >> 8).astype(np.uint8)
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise InputError("depth_mm: PNG encoding failed")
    return buf.tobytes()


def write_depth_png(path: str | os.PathLike, depth_mm: np.ndarray) -> None:
    """Write (H, W) depth in mm (0 = invalid) as an NYU depth PNG, atomically."""
    atomic.write_bytes(path, encode_depth_png(depth_mm))


def xyz_nyu_mm_to_c_m(xyz_mm: np.ndarray) -> np.ndarray:
    """NYU's y-up millimetres -> optical frame metres, (..., 3)."""
    p = np.asarray(xyz_mm, dtype=np.float64)
    return p * np.array([1.0, -1.0, 1.0]) / 1000.0


def c_m_to_xyz_nyu_mm(points_c_m: np.ndarray) -> np.ndarray:
    """Optical frame metres -> NYU's y-up millimetres, (..., 3)."""
    p = np.asarray(points_c_m, dtype=np.float64)
    return p * np.array([1000.0, -1000.0, 1000.0])


def c_m_to_uvd(points_c_m: np.ndarray, K: np.ndarray | None = None) -> np.ndarray:
    """Optical-frame points (metres) -> NYU (u, v, d mm), (..., 3)."""
    K = nyu_K() if K is None else np.asarray(K, dtype=np.float64)
    p = np.asarray(points_c_m, dtype=np.float64)
    z = p[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * p[..., 0] / z + K[0, 2]
        v = K[1, 1] * p[..., 1] / z + K[1, 2]
    return np.stack([u, v, z * 1000.0], axis=-1)


@dataclass(frozen=True)
class NyuFrame:
    """One frame of an NYU-layout split.

    Attributes:
        index: 0-based position in the split (file frame number = index + 1).
        depth_path: the real ``depth_*`` PNG.
        synth_path: the ``synthdepth_*`` PNG.
        joints_uvd: (36, 3) float64 u, v pixels and d mm, as in ``joint_uvd``.
        joints_c_m: (36, 3) float64 optical frame, metres (from ``joint_xyz``).
    """

    index: int
    depth_path: Path
    synth_path: Path
    joints_uvd: np.ndarray
    joints_c_m: np.ndarray

    @property
    def frame_number(self) -> int:
        return self.index + 1


def eval_joints(frame_or_joints: NyuFrame | np.ndarray) -> np.ndarray:
    """The 14 evaluation joints of a frame (its ``joints_c_m``) or of a (..., 36, k) array."""
    J = frame_or_joints.joints_c_m if isinstance(frame_or_joints, NyuFrame) else np.asarray(frame_or_joints)
    if J.shape[-2] != 36:
        raise InputError(f"eval_joints: expected 36 joints, got shape {J.shape}")
    return J[..., list(NYU_EVAL_JOINTS), :]


def _load_mat(path: Path) -> dict:
    import scipy.io

    if not path.is_file():
        raise InputError(f"{path}: joint_data.mat not found")
    try:
        return scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, MatReadError on damage
        raise InputError(f"{path}: cannot read MATLAB file ({type(e).__name__}: {e})") from None


def _names_from_mat(raw) -> list[str]:
    arr = np.asarray(raw)
    if arr.dtype.kind == "U":  # a char matrix, one name per row
        return [str(x).strip() for x in arr.ravel()]
    return [str(np.asarray(x).ravel()[0]).strip() if np.asarray(x).size else "" for x in arr.ravel()]


class NyuDataset:
    """One split of an NYU-layout folder, read lazily.

    ``joint_data.mat`` is read once, at construction; PNGs only when asked for.

    Args:
        root: folder holding ``train/`` and ``test/`` (or the split folder itself).
        split: ``train`` or ``test``.
        view: camera view 1..3 (only the views present in the file).

    Raises:
        InputError: naming the file or field at fault.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", view: int = 1) -> None:
        if split not in SPLITS:
            raise InputError(f"split: expected one of {SPLITS}, got {split!r}")
        root = Path(root)
        self.split = split
        self.view = int(view)
        if (root / split).is_dir():
            self.dir = root / split
        elif root.name == split and root.is_dir():
            self.dir = root
        else:
            raise InputError(f"{root / split}: NYU split folder not found")
        mat_path = self.dir / "joint_data.mat"
        self.mat_path = mat_path
        mat = _load_mat(mat_path)
        for key in ("joint_uvd", "joint_xyz"):
            if key not in mat:
                raise InputError(f"{mat_path}: field {key!r} missing (has {sorted(k for k in mat if not k.startswith('__'))})")
        uvd = np.asarray(mat["joint_uvd"], dtype=np.float64)
        xyz = np.asarray(mat["joint_xyz"], dtype=np.float64)
        if uvd.ndim == 3:  # a file holding one view
            uvd, xyz = uvd[None], xyz[None]
        for key, arr in (("joint_uvd", uvd), ("joint_xyz", xyz)):
            if arr.ndim != 4 or arr.shape[2:] != (36, 3):
                raise InputError(f"{mat_path}: field {key!r} must be views x frames x 36 x 3, got {arr.shape}")
        if uvd.shape != xyz.shape:
            raise InputError(f"{mat_path}: joint_uvd {uvd.shape} and joint_xyz {xyz.shape} disagree")
        if not 1 <= self.view <= uvd.shape[0]:
            raise InputError(f"{mat_path}: view {self.view} not present (file has {uvd.shape[0]} view(s))")
        self.joint_names = _names_from_mat(mat["joint_names"]) if "joint_names" in mat else list(NYU_JOINT_NAMES)
        if len(self.joint_names) != 36:
            raise InputError(f"{mat_path}: field 'joint_names' has {len(self.joint_names)} names, expected 36")
        self._uvd = uvd[self.view - 1]
        self._xyz_mm = xyz[self.view - 1]
        self.K = nyu_K()

    def __len__(self) -> int:
        return int(self._uvd.shape[0])

    def __getitem__(self, i: int) -> NyuFrame:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"frame index {i} out of range for {n} frames in {self.dir}")
        i = i % n
        return NyuFrame(
            index=i,
            depth_path=self.dir / depth_name(self.view, i + 1),
            synth_path=self.dir / depth_name(self.view, i + 1, synth=True),
            joints_uvd=self._uvd[i].copy(),
            joints_c_m=xyz_nyu_mm_to_c_m(self._xyz_mm[i]),
        )

    def joints_c_m(self) -> np.ndarray:
        """(N, 36, 3) float64 all frames' joints, optical frame, metres."""
        return xyz_nyu_mm_to_c_m(self._xyz_mm)

    def subjects(self) -> list[tuple[str, range]]:
        """Test subjects as (name, 0-based index range), clipped to this split's length.

        The train split is one range, ``all``.
        """
        n = len(self)
        if self.split != "test":
            return [("all", range(n))]
        return [(name, range(a - 1, min(b, n))) for a, b, name in hand_dataset("nyu").subjects if a - 1 < n]

    def subject_of(self, i: int) -> str:
        """Name of the test subject of frame index ``i`` (``all`` for train)."""
        for name, r in self.subjects():
            if i in r:
                return name
        raise IndexError(f"frame index {i} is in no subject range of {self.dir}")


class NyuSplitWriter:
    """Write a split folder in NYU's layout frame by frame; the folder appears only when complete.

    Use as a context manager::

        with NyuSplitWriter(out / "train") as w:
            w.add(joints_c_m, depth_mm=real_mm, synth_mm=synth_mm)

    PNGs go to a temporary sibling as they come (memory stays flat); ``joint_data.mat`` is
    written on a clean exit, then the folder is renamed into place (replacing an old one).

    Args:
        out_dir: the split folder (e.g. ``DIR/train``).
        K: intrinsics for ``joint_uvd`` (default NYU's).
        view: view number in the file names.
    """

    def __init__(self, out_dir: str | os.PathLike, K: np.ndarray | None = None, view: int = 1) -> None:
        self.out_dir = Path(out_dir)
        self.K = K
        self.view = int(view)
        self._joints: list[np.ndarray] = []
        self._ctx = None
        self._tmp: Path | None = None

    def __enter__(self) -> "NyuSplitWriter":
        self._ctx = atomic.atomic_dir(self.out_dir)
        self._tmp = self._ctx.__enter__()
        return self

    def add(self, joints_c_m: np.ndarray, depth_mm: np.ndarray | None = None, synth_mm: np.ndarray | None = None) -> int:
        """Append one frame: (36, 3) joints in metres, optical frame; depth maps in mm. Returns its number."""
        if self._tmp is None:
            raise InputError("NyuSplitWriter.add called outside its 'with' block")
        J = np.asarray(joints_c_m, dtype=np.float64)
        if J.shape != (36, 3):
            raise InputError(f"joints_c_m: expected (36, 3), got {J.shape}")
        n = len(self._joints) + 1
        if depth_mm is not None:
            (self._tmp / depth_name(self.view, n)).write_bytes(encode_depth_png(depth_mm))
        if synth_mm is not None:
            (self._tmp / depth_name(self.view, n, synth=True)).write_bytes(encode_depth_png(synth_mm))
        self._joints.append(J)
        return n

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                J = np.stack(self._joints) if self._joints else np.zeros((0, 36, 3))
                write_joint_data(self._tmp / "joint_data.mat", J, self.K)
        except BaseException:
            self._ctx.__exit__(*sys.exc_info())
            raise
        return bool(self._ctx.__exit__(exc_type, exc, tb))


def write_nyu_split(
    out_dir: str | os.PathLike,
    joints_c_m: np.ndarray,
    depth_mm: list[np.ndarray] | None = None,
    synth_mm: list[np.ndarray] | None = None,
    K: np.ndarray | None = None,
    view: int = 1,
) -> Path:
    """Write a complete split folder in NYU's layout, atomically (all or nothing).

    Args:
        out_dir: the split folder to create (e.g. ``DIR/train``); replaced if it exists.
        joints_c_m: (N, 36, 3) joints, optical frame, metres.
        depth_mm: N (H, W) real(-like) depth maps, mm, 0 = invalid (or None).
        synth_mm: N (H, W) synthetic depth maps, mm (or None).
        K: intrinsics used for ``joint_uvd`` (default NYU's).
        view: view number in the file names (1..3).

    Returns:
        The split folder.
    """
    J = np.asarray(joints_c_m, dtype=np.float64)
    if J.ndim != 3 or J.shape[1:] != (36, 3):
        raise InputError(f"joints_c_m: expected (N, 36, 3), got {J.shape}")
    n = J.shape[0]
    for name, maps in (("depth_mm", depth_mm), ("synth_mm", synth_mm)):
        if maps is not None and len(maps) != n:
            raise InputError(f"{name}: {len(maps)} maps for {n} frames")
    with NyuSplitWriter(out_dir, K, view) as w:
        for i in range(n):
            w.add(J[i], None if depth_mm is None else depth_mm[i], None if synth_mm is None else synth_mm[i])
    return Path(out_dir)


def write_joint_data(path: str | os.PathLike, joints_c_m: np.ndarray, K: np.ndarray | None = None) -> None:
    """Write ``joint_data.mat`` (one view) as NYU has it, atomically.

    Args:
        path: destination.
        joints_c_m: (N, 36, 3) joints, optical frame, metres.
        K: intrinsics for ``joint_uvd`` (default NYU's).
    """
    import scipy.io

    J = np.asarray(joints_c_m, dtype=np.float64)
    if J.ndim != 3 or J.shape[1:] != (36, 3):
        raise InputError(f"joints_c_m: expected (N, 36, 3), got {J.shape}")
    uvd = c_m_to_uvd(J, K)[None]
    xyz = c_m_to_xyz_nyu_mm(J)[None]
    names = np.empty((1, 36), dtype=object)
    for k, nm in enumerate(NYU_JOINT_NAMES):
        names[0, k] = nm
    with atomic.atomic_path(path, suffix=".mat") as tmp:
        scipy.io.savemat(str(tmp), {"joint_uvd": uvd, "joint_xyz": xyz, "joint_names": names}, do_compression=False)
