"""BOP datasets (lm, lmo, any BOP object dataset): reading, writing, and the LINEMOD training split.

On-disk layout (https://github.com/thodan/bop_toolkit/blob/master/docs/bop_datasets_format.md)::

    <root>/models/models_info.json         obj_id -> diameter, min_x.., size_x.. (mm), symmetries
    <root>/models/obj_000001.ply           mesh in millimetres, vertex colours
    <root>/<split>/<scene:06d>/scene_camera.json   im_id -> cam_K (9, row-major), depth_scale
    <root>/<split>/<scene:06d>/scene_gt.json       im_id -> [cam_R_m2c (9, row-major), cam_t_m2c (mm), obj_id]
    <root>/<split>/<scene:06d>/scene_gt_info.json  im_id -> [bbox_obj, bbox_visib, px_count_all, visib_fract]
    <root>/<split>/<scene:06d>/rgb/<im:06d>.png|jpg, depth/<im:06d>.png (uint16; x depth_scale = mm),
    <root>/<split>/<scene:06d>/mask/<im:06d>_<inst:06d>.png, mask_visib/...

Millimetres are converted to metres once, here: every record this module returns is in metres
with frames in the names (``R_m2c``, ``t_m2c_m``). Rotations that are not orthonormal (LM-O
ground truth of objects 5, 8 and 12 deviates by up to ~1e-3) are replaced by the nearest
rotation (:func:`featmap_ros.geometry.orthonormalize`) and a warning states how many and by
how much; a matrix far from any rotation is an error.

Writing (:class:`BopWriter`) produces the same layout inside a temporary directory that is moved
into place when the writer is closed without error, so a dataset is either complete or absent.

The LINEMOD training split (:func:`farthest_view_split`): for each object, ~15 % of its frames are
chosen by deterministic farthest-point sampling on the unit viewing directions (camera centre in
the model frame, normalised), starting from the frame with the smallest ``im_id``; each next pick is
the frame whose direction has the largest angle to all picks so far (ties -> smallest ``im_id``).
The rest is test. A split file (one ``im_id`` per line, as LINEMOD's ``train.txt``) can be used
instead (:func:`read_split_file`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from featmap_ros import atomic, geometry
from featmap_ros.data.specs import ObjectDatasetSpec, object_dataset
from featmap_ros.errors import InputError

log = logging.getLogger(__name__)

#: Rotations whose max |R R^T - I| exceeds this are re-orthonormalised (JSON rounding gives ~1e-8).
ORTHO_CORRECT_TOL = 1e-6
#: Beyond this the matrix is not a rotation with rounding errors but wrong data.
ORTHO_REJECT_TOL = 0.05

__all__ = [
    "ModelInfo", "Mesh", "GtInstance", "BopFrame", "TestTarget", "BopWriter",
    "load_models_info", "models_info_to_json", "load_mesh", "save_mesh", "read_scene", "list_scenes",
    "load_test_targets", "load_rgb", "load_depth_m", "load_mask", "model_path", "dataset_spec",
    "viewing_directions", "farthest_view_split", "read_split_file", "write_split_file",
]


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class ModelInfo:
    """One object's entry of ``models_info.json``, in metres.

    Attributes:
        obj_id: BOP object id.
        diameter_m: largest distance between two model points, metres.
        min_m: (3,) float64 minimum corner of the model's axis-aligned box, metres.
        size_m: (3,) float64 box extents, metres.
        symmetries_discrete: list of (4, 4) float64 model-frame transforms, translation in metres.
        symmetries_continuous: list of ``{"axis": (3,) float64, "offset_m": (3,) float64}``.
    """

    obj_id: int
    diameter_m: float
    min_m: np.ndarray
    size_m: np.ndarray
    symmetries_discrete: list = field(default_factory=list)
    symmetries_continuous: list = field(default_factory=list)

    @property
    def corners_m(self) -> np.ndarray:
        """(8, 3) float64 box corners in the model frame, metres (order of geometry.BOX_CORNER_SIGNS)."""
        return geometry.box_corners(self.min_m, self.size_m)

    @property
    def center_m(self) -> np.ndarray:
        """(3,) float64 centre of the model's box, metres."""
        return np.asarray(self.min_m, dtype=np.float64) + 0.5 * np.asarray(self.size_m, dtype=np.float64)

    @property
    def is_symmetric(self) -> bool:
        return bool(self.symmetries_discrete or self.symmetries_continuous)


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh in metres.

    Attributes:
        vertices_m: (N, 3) float64 vertices, model frame, metres.
        faces: (F, 3) int64 vertex indices.
        colors: (N, 3) uint8 RGB vertex colours, or None.
        name: where it came from (file name or a label), for messages.
    """

    vertices_m: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None
    name: str = ""

    def to_trimesh(self):
        """A ``trimesh.Trimesh`` copy (vertex colours kept), metres."""
        import trimesh

        vc = None
        if self.colors is not None:
            vc = np.concatenate([self.colors, np.full((len(self.colors), 1), 255, np.uint8)], axis=1)
        return trimesh.Trimesh(self.vertices_m.copy(), self.faces.copy(), vertex_colors=vc, process=False)


@dataclass(frozen=True)
class GtInstance:
    """One annotated object instance in a frame.

    Attributes:
        obj_id: BOP object id.
        R_m2c: (3, 3) float64 rotation model -> camera (orthonormal).
        t_m2c_m: (3,) float64 translation, metres.
        bbox_obj: (4,) int x, y, w, h of the full silhouette, pixels, or None without scene_gt_info.
        bbox_visib: (4,) int of the visible part, or None.
        px_count_all: pixels of the full silhouette, or None.
        visib_fract: visible fraction in [0, 1], or None.
        mask_path: ``mask/<im>_<inst>.png`` if present, else None.
        mask_visib_path: ``mask_visib/<im>_<inst>.png`` if present, else None.
    """

    obj_id: int
    R_m2c: np.ndarray
    t_m2c_m: np.ndarray
    bbox_obj: tuple | None = None
    bbox_visib: tuple | None = None
    px_count_all: int | None = None
    visib_fract: float | None = None
    mask_path: Path | None = None
    mask_visib_path: Path | None = None


@dataclass(frozen=True)
class BopFrame:
    """One image of a BOP scene with its ground truth.

    Attributes:
        scene_id: scene number.
        im_id: image number.
        K: (3, 3) float64 intrinsics, pixels.
        depth_scale: depth PNG value x depth_scale = millimetres.
        rgb_path: colour image path, or None when the image is not on disk.
        depth_path: depth image path, or None.
        instances: ground-truth instances in ``scene_gt.json`` order.
    """

    scene_id: int
    im_id: int
    K: np.ndarray
    depth_scale: float
    rgb_path: Path | None
    depth_path: Path | None
    instances: list

    def instances_of(self, obj_id: int) -> list:
        return [g for g in self.instances if g.obj_id == obj_id]


@dataclass(frozen=True)
class TestTarget:
    """One entry of a BOP ``test_targets_*.json``."""

    scene_id: int
    im_id: int
    obj_id: int
    inst_count: int


def dataset_spec(name: str) -> ObjectDatasetSpec:
    """The dataset facts (intrinsics, object names, symmetric ids) of a BOP dataset by name."""
    return object_dataset(name)


# --------------------------------------------------------------------------------------------
# JSON helpers


def _read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read ({e})") from None


def _field(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected an object, got {type(d).__name__}")
    if key not in d:
        raise InputError(f"{where}: missing key '{key}'")
    return d[key]


def _floats(value: Any, n: int, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected {n} numbers, got {value!r}") from None
    if arr.size != n:
        raise InputError(f"{where}: expected {n} numbers, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{where}: contains NaN or inf")
    return arr


def _int_key(key: str, where: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise InputError(f"{where}: key {key!r} is not an integer id") from None


# --------------------------------------------------------------------------------------------
# Models


def load_models_info(path: str | os.PathLike) -> dict[int, ModelInfo]:
    """Read ``models_info.json`` (millimetres) into metres.

    Args:
        path: the JSON file.

    Returns:
        obj_id -> :class:`ModelInfo`, sorted by obj_id.

    Raises:
        InputError: missing/invalid file or a missing/ill-typed key (named with the obj_id).
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected an object obj_id -> info")
    out: dict[int, ModelInfo] = {}
    for key in sorted(data, key=lambda k: _int_key(k, str(path))):
        obj_id = _int_key(key, str(path))
        rec = data[key]
        where = f"{path}: obj {key}"
        diameter = float(_floats(_field(rec, "diameter", where), 1, f"{where}.diameter")[0])
        lo = np.array([float(_floats(_field(rec, f"min_{a}", where), 1, f"{where}.min_{a}")[0]) for a in "xyz"])
        size = np.array([float(_floats(_field(rec, f"size_{a}", where), 1, f"{where}.size_{a}")[0]) for a in "xyz"])
        if diameter <= 0 or np.any(size < 0):
            raise InputError(f"{where}: diameter must be positive and sizes non-negative")
        sym_d = []
        for i, s in enumerate(rec.get("symmetries_discrete", []) or []):
            T = _floats(s, 16, f"{where}.symmetries_discrete[{i}]").reshape(4, 4).copy()
            T[:3, 3] /= 1000.0
            sym_d.append(T)
        sym_c = []
        for i, s in enumerate(rec.get("symmetries_continuous", []) or []):
            w = f"{where}.symmetries_continuous[{i}]"
            sym_c.append({
                "axis": _floats(_field(s, "axis", w), 3, f"{w}.axis"),
                "offset_m": _floats(_field(s, "offset", w), 3, f"{w}.offset") / 1000.0,
            })
        out[obj_id] = ModelInfo(obj_id, diameter / 1000.0, lo / 1000.0, size / 1000.0, sym_d, sym_c)
    return out


def models_info_to_json(infos: dict[int, ModelInfo]) -> dict[str, dict]:
    """The inverse of :func:`load_models_info`: a ``models_info.json`` object in millimetres."""
    out = {}
    for obj_id in sorted(infos):
        m = infos[obj_id]
        rec: dict[str, Any] = {"diameter": float(m.diameter_m * 1000.0)}
        for i, a in enumerate("xyz"):
            rec[f"min_{a}"] = float(m.min_m[i] * 1000.0)
        for i, a in enumerate("xyz"):
            rec[f"size_{a}"] = float(m.size_m[i] * 1000.0)
        if m.symmetries_discrete:
            syms = []
            for T in m.symmetries_discrete:
                Tm = np.asarray(T, dtype=np.float64).copy()
                Tm[:3, 3] *= 1000.0
                syms.append(Tm.reshape(-1).tolist())
            rec["symmetries_discrete"] = syms
        if m.symmetries_continuous:
            rec["symmetries_continuous"] = [
                {"axis": np.asarray(s["axis"], float).tolist(), "offset": (np.asarray(s["offset_m"], float) * 1000.0).tolist()}
                for s in m.symmetries_continuous
            ]
        out[str(obj_id)] = rec
    return out


def model_info_from_mesh(obj_id: int, mesh: Mesh, symmetries_discrete: Sequence[np.ndarray] = ()) -> ModelInfo:
    """A :class:`ModelInfo` computed from a mesh (diameter = max vertex distance, on the hull)."""
    import trimesh

    v = mesh.vertices_m
    lo, hi = v.min(axis=0), v.max(axis=0)
    try:
        hull = trimesh.Trimesh(v, mesh.faces, process=False).convex_hull.vertices
    except Exception:  # degenerate meshes: fall back to all vertices
        hull = v
    d = np.sqrt(((hull[:, None, :] - hull[None, :, :]) ** 2).sum(-1)).max()
    return ModelInfo(int(obj_id), float(d), lo, hi - lo, [np.asarray(T, float) for T in symmetries_discrete], [])


def _ply_vertex_count(path: Path) -> int | None:
    """Vertex count from a PLY header (None if unreadable); used to detect truncated files."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    if not head.startswith(b"ply"):
        return None
    for line in head.split(b"\n"):
        parts = line.strip().split()
        if len(parts) == 3 and parts[0] == b"element" and parts[1] == b"vertex":
            try:
                return int(parts[2])
            except ValueError:
                return None
        if line.strip() == b"end_header":
            break
    return None


def decimate_mesh(mesh: Mesh, max_triangles: int) -> Mesh:
    """The mesh simplified to at most ``max_triangles`` faces (quadric decimation, trimesh with
    fast-simplification); a mesh that has no more faces is returned as it is.

    Args:
        mesh: a triangle mesh (metres).
        max_triangles: the most faces kept, >= 4.

    Returns:
        A new :class:`Mesh` (no vertex colours) or ``mesh`` itself.

    Raises:
        InputError: ``max_triangles`` below 4, or a decimation that leaves no face.
    """
    import trimesh

    if int(max_triangles) < 4:
        raise InputError(f"decimate_mesh: max_triangles must be at least 4, got {max_triangles}")
    if len(mesh.faces) <= max_triangles:
        return mesh
    tm = trimesh.Trimesh(vertices=mesh.vertices_m, faces=mesh.faces, process=True)
    out = tm.simplify_quadric_decimation(face_count=int(max_triangles))
    # the simplifier aims at the count; trim the last few over it by aiming lower
    target = int(max_triangles)
    while len(out.faces) > max_triangles and target > 4:
        target = max(4, int(target * 0.95))
        out = tm.simplify_quadric_decimation(face_count=target)
    if len(out.faces) == 0:
        raise InputError(f"{mesh.name or 'mesh'}: decimation to {max_triangles} triangles left no face")
    return Mesh(np.asarray(out.vertices, np.float64), np.asarray(out.faces, np.int64), None,
                f"{mesh.name} (decimated to {len(out.faces)} faces)")


def load_mesh(path: str | os.PathLike, units: str = "mm") -> Mesh:
    """Read a PLY (or any trimesh format) mesh into metres.

    Args:
        path: mesh file.
        units: unit of the file's coordinates: ``"mm"`` (BOP) or ``"m"``.

    Returns:
        :class:`Mesh` with vertex colours when the file has them (a textured mesh gets colours
        sampled from its texture by trimesh).

    Raises:
        InputError: missing, truncated or unparsable file, no faces, or unknown units.
    """
    import trimesh

    path = Path(path)
    scale = {"mm": 1e-3, "m": 1.0}.get(units)
    if scale is None:
        raise InputError(f"load_mesh: units must be 'mm' or 'm', got {units!r}")
    if not path.is_file():
        raise InputError(f"{path}: mesh file not found")
    try:
        tm = trimesh.load(str(path), process=False, force="mesh")
    except Exception as e:  # trimesh raises many types for broken files
        raise InputError(f"{path}: cannot read mesh ({type(e).__name__}: {e})") from None
    n_header = _ply_vertex_count(path)
    verts = np.asarray(getattr(tm, "vertices", np.zeros((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(tm, "faces", np.zeros((0, 3))), dtype=np.int64)
    if n_header is not None and len(verts) != n_header:
        raise InputError(f"{path}: truncated mesh ({len(verts)} of {n_header} vertices read)")
    if len(verts) == 0 or len(faces) == 0:
        raise InputError(f"{path}: mesh has no vertices or faces (truncated or empty file)")
    if not np.all(np.isfinite(verts)) or faces.max() >= len(verts) or faces.min() < 0:
        raise InputError(f"{path}: mesh has non-finite vertices or face indices out of range")
    colors = None
    visual = getattr(tm, "visual", None)
    if visual is not None and getattr(visual, "kind", None) in ("vertex", "texture"):
        try:
            vc = np.asarray(visual.to_color().vertex_colors if visual.kind == "texture" else visual.vertex_colors)
            if vc.shape[0] == len(verts):
                colors = vc[:, :3].astype(np.uint8)
        except Exception:  # a texture trimesh cannot sample: keep the mesh uncoloured
            colors = None
    return Mesh(verts * scale, faces, colors, name=path.name)


def save_mesh(path: str | os.PathLike, mesh: Mesh, units: str = "mm") -> None:
    """Write a mesh as a binary PLY with vertex colours (atomically).

    Args:
        path: output ``.ply``.
        mesh: the mesh, metres.
        units: unit written to the file (``"mm"`` for BOP).
    """
    scale = {"mm": 1e3, "m": 1.0}.get(units)
    if scale is None:
        raise InputError(f"save_mesh: units must be 'mm' or 'm', got {units!r}")
    tm = Mesh(mesh.vertices_m * scale, mesh.faces, mesh.colors, mesh.name).to_trimesh()
    data = tm.export(file_type="ply", encoding="binary")
    atomic.write_bytes(path, data)


def model_path(root: str | os.PathLike, obj_id: int, models_dir: str = "models") -> Path:
    """``<root>/<models_dir>/obj_<obj_id:06d>.ply``."""
    return Path(root) / models_dir / f"obj_{int(obj_id):06d}.ply"


# --------------------------------------------------------------------------------------------
# Images


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read a colour image as (H, W, 3) uint8 RGB; grey images are expanded to 3 channels.

    Raises:
        InputError: missing or undecodable (e.g. truncated) file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image not found")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: cannot decode image (truncated or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_depth_m(path: str | os.PathLike, depth_scale: float) -> np.ndarray:
    """Read a BOP depth PNG as (H, W) float32 metres (0 = no measurement).

    Raises:
        InputError: missing or undecodable file, or not single-channel.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: depth image not found")
    d = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if d is None:
        raise InputError(f"{path}: cannot decode depth image (truncated or not an image)")
    if d.ndim != 2:
        raise InputError(f"{path}: depth must be single-channel, got shape {d.shape}")
    return (d.astype(np.float32) * np.float32(depth_scale) / np.float32(1000.0))


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a BOP mask PNG as (H, W) bool."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: mask not found")
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise InputError(f"{path}: cannot decode mask")
    return m > 127


# --------------------------------------------------------------------------------------------
# Scenes


def _checked_rotation(R: np.ndarray, where: str, obj_id: int, corrected: list) -> np.ndarray:
    err = geometry.orthonormality_error(R)
    if err > ORTHO_REJECT_TOL:
        raise InputError(f"{where}: cam_R_m2c is not a rotation (max |R R^T - I| = {err:.3g})")
    if err > ORTHO_CORRECT_TOL or np.linalg.det(R) < 0:
        corrected.append((where, obj_id, err))
        return geometry.orthonormalize(R)
    return R


def _find_image(scene_dir: Path, folders: Sequence[str], im_id: int) -> Path | None:
    for folder in folders:
        for ext in (".png", ".jpg", ".jpeg", ".tif"):
            p = scene_dir / folder / f"{im_id:06d}{ext}"
            if p.is_file():
                return p
    return None


def read_scene(scene_dir: str | os.PathLike, models_info: dict[int, ModelInfo] | None = None,
               ground_truth: bool = True) -> list[BopFrame]:
    """Read one BOP scene folder.

    Args:
        scene_dir: ``<root>/<split>/<scene:06d>``.
        models_info: when given, every ``obj_id`` must be in it (else InputError).
        ground_truth: False = never open ``scene_gt.json`` / ``scene_gt_info.json``, even when
            they exist (unlabelled frames, ``featmap train adapt``): every frame has no instance.

    Returns:
        Frames sorted by ``im_id``: every im_id of ``scene_camera.json``; instances from
        ``scene_gt.json`` (empty if that file is absent) with ``scene_gt_info.json`` fields when
        present. Non-orthonormal rotations are corrected with a logged warning.

    Raises:
        InputError: missing ``scene_camera.json``, invalid JSON, missing keys, a scene_gt_info
            list whose length differs from scene_gt's, an unknown obj_id, or a non-rotation.
    """
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise InputError(f"{scene_dir}: scene folder not found")
    try:
        scene_id = int(scene_dir.name)
    except ValueError:
        raise InputError(f"{scene_dir}: scene folder name must be a number") from None
    cam_path = scene_dir / "scene_camera.json"
    gt_path = scene_dir / "scene_gt.json"
    info_path = scene_dir / "scene_gt_info.json"
    cams = _read_json(cam_path)
    gts = _read_json(gt_path) if ground_truth and gt_path.exists() else {}
    infos = _read_json(info_path) if ground_truth and info_path.exists() else {}
    for p, d in ((cam_path, cams), (gt_path, gts), (info_path, infos)):
        if not isinstance(d, dict):
            raise InputError(f"{p}: expected an object im_id -> ...")
    im_ids = sorted({_int_key(k, str(cam_path)) for k in cams})
    for k in gts:
        if str(_int_key(k, str(gt_path))) not in cams and k not in cams:
            raise InputError(f"{gt_path}: im_id {k} has no entry in {cam_path.name}")
    corrected: list = []
    frames = []
    for im_id in im_ids:
        key = str(im_id) if str(im_id) in cams else next(k for k in cams if int(k) == im_id)
        where = f"{cam_path}: im_id {key}"
        cam = cams[key]
        K = geometry.check_K(_floats(_field(cam, "cam_K", where), 9, f"{where}.cam_K"), f"{where}.cam_K")
        depth_scale = float(cam.get("depth_scale", 1.0)) if isinstance(cam, dict) else 1.0
        inst_list = gts.get(key, [])
        info_list = infos.get(key)
        if info_list is not None and len(info_list) != len(inst_list):
            raise InputError(f"{info_path}: im_id {key}: {len(info_list)} entries but scene_gt has {len(inst_list)}")
        instances = []
        for i, g in enumerate(inst_list):
            w = f"{gt_path}: im_id {key}[{i}]"
            obj_id = int(_floats(_field(g, "obj_id", w), 1, f"{w}.obj_id")[0])
            if models_info is not None and obj_id not in models_info:
                raise InputError(f"{w}: obj_id {obj_id} is not in models_info (known: {sorted(models_info)})")
            R = _floats(_field(g, "cam_R_m2c", w), 9, f"{w}.cam_R_m2c").reshape(3, 3)
            R = _checked_rotation(R, w, obj_id, corrected)
            t = _floats(_field(g, "cam_t_m2c", w), 3, f"{w}.cam_t_m2c") / 1000.0
            kw: dict[str, Any] = {}
            if info_list is not None:
                inf = info_list[i]
                wi = f"{info_path}: im_id {key}[{i}]"
                kw["bbox_obj"] = tuple(int(x) for x in _floats(_field(inf, "bbox_obj", wi), 4, f"{wi}.bbox_obj"))
                kw["bbox_visib"] = tuple(int(x) for x in _floats(_field(inf, "bbox_visib", wi), 4, f"{wi}.bbox_visib"))
                kw["px_count_all"] = int(_field(inf, "px_count_all", wi))
                kw["visib_fract"] = float(_field(inf, "visib_fract", wi))
            mp = scene_dir / "mask" / f"{im_id:06d}_{i:06d}.png"
            mvp = scene_dir / "mask_visib" / f"{im_id:06d}_{i:06d}.png"
            instances.append(GtInstance(
                obj_id, R, t, mask_path=mp if mp.is_file() else None,
                mask_visib_path=mvp if mvp.is_file() else None, **kw,
            ))
        frames.append(BopFrame(
            scene_id, im_id, K, depth_scale,
            _find_image(scene_dir, ("rgb", "gray"), im_id), _find_image(scene_dir, ("depth",), im_id), instances,
        ))
    if corrected:
        per_obj: dict[int, list[float]] = {}
        for _, obj_id, err in corrected:
            per_obj.setdefault(obj_id, []).append(err)
        worst = max(corrected, key=lambda c: c[2])
        log.warning(
            "%s: re-orthonormalised %d cam_R_m2c with max |R R^T - I| > %g (per obj_id: %s; worst %.3g at %s)",
            gt_path, len(corrected), ORTHO_CORRECT_TOL,
            ", ".join(f"{o}: {len(e)} up to {max(e):.2g}" for o, e in sorted(per_obj.items())), worst[2], worst[0],
        )
    return frames


def list_scenes(split_dir: str | os.PathLike) -> list[Path]:
    """Scene folders (numeric names) of a split folder, sorted."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise InputError(f"{split_dir}: split folder not found")
    return sorted((p for p in split_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def load_test_targets(path: str | os.PathLike) -> list[TestTarget]:
    """Read a BOP ``test_targets_bop19.json`` (a list of {scene_id, im_id, obj_id, inst_count})."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of targets")
    out = []
    for i, t in enumerate(data):
        w = f"{path}: [{i}]"
        out.append(TestTarget(*(int(_field(t, k, w)) for k in ("scene_id", "im_id", "obj_id", "inst_count"))))
    return out


# --------------------------------------------------------------------------------------------
# Training split


def viewing_directions(R_m2c: np.ndarray, t_m2c: np.ndarray) -> np.ndarray:
    """Unit directions from the model origin to the camera centre, model frame.

    Args:
        R_m2c: (N, 3, 3) rotations.
        t_m2c: (N, 3) translations (any unit).

    Returns:
        (N, 3) float64 unit vectors (camera centre = -R^T t).
    """
    R = np.asarray(R_m2c, dtype=np.float64).reshape(-1, 3, 3)
    t = np.asarray(t_m2c, dtype=np.float64).reshape(-1, 3)
    c = -np.einsum("nji,nj->ni", R, t)
    n = np.linalg.norm(c, axis=1, keepdims=True)
    return c / np.maximum(n, 1e-12)


def farthest_view_split(
    im_ids: Sequence[int], R_m2c: np.ndarray, t_m2c: np.ndarray, fraction: float = 0.15
) -> tuple[list[int], list[int]]:
    """The LINEMOD-style training split: viewpoints far apart, deterministic.

    Args:
        im_ids: (N,) image ids of one object's frames.
        R_m2c: (N, 3, 3) that object's rotations.
        t_m2c: (N, 3) its translations.
        fraction: share of frames for training, in (0, 1]; ``ceil(fraction * N)`` are taken.

    Returns:
        (train_ids, test_ids), each sorted.
    """
    ids = np.asarray(list(im_ids), dtype=np.int64)
    if not 0 < fraction <= 1:
        raise InputError(f"split fraction must be in (0, 1], got {fraction}")
    n = len(ids)
    if n == 0:
        return [], []
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    d = viewing_directions(np.asarray(R_m2c)[order], np.asarray(t_m2c)[order])
    k = min(n, max(1, math.ceil(fraction * n)))
    chosen = [0]
    min_angle = np.arccos(np.clip(d @ d[0], -1.0, 1.0))
    min_angle[0] = -1.0
    for _ in range(k - 1):
        j = int(np.argmax(min_angle))  # argmax returns the first max: smallest im_id on ties
        chosen.append(j)
        min_angle = np.minimum(min_angle, np.arccos(np.clip(d @ d[j], -1.0, 1.0)))
        min_angle[chosen] = -1.0
    mask = np.zeros(n, bool)
    mask[chosen] = True
    return sorted(ids[mask].tolist()), sorted(ids[~mask].tolist())


def read_split_file(path: str | os.PathLike) -> list[int]:
    """Image ids from a split file: one integer per line (LINEMOD ``train.txt``); '#' comments allowed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: split file not found")
    ids = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        try:
            ids.append(int(Path(s).stem) if not s.isdigit() else int(s))
        except ValueError:
            raise InputError(f"{path}: line {lineno}: expected an image id, got {s!r}") from None
    return ids


def write_split_file(path: str | os.PathLike, im_ids: Iterable[int]) -> None:
    """Write image ids one per line (atomically)."""
    atomic.write_text(path, "".join(f"{int(i)}\n" for i in im_ids))


# --------------------------------------------------------------------------------------------
# Writer


def _bbox_of(mask: np.ndarray) -> list[int]:
    """bop_toolkit's box of a mask: [x_min, y_min, x_max - x_min, y_max - y_min]; -1s if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [-1, -1, -1, -1]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())]


def _write_png(path: Path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), img):
        raise InputError(f"{path}: cannot write image")


class BopWriter:
    """Write a dataset in the BOP layout, atomically (temp dir moved into place on close).

    Use as a context manager::

        with BopWriter(root, split="train") as w:
            w.write_models({1: mesh}, {1: info})
            w.add_frame(scene_id=1, im_id=0, K=K, instances=[...], rgb=rgb, depth_m=depth,
                        masks=[...], masks_visib=[...])

    ``scene_gt_info.json`` is computed from the masks when they are given (bbox_obj, px_count_all
    from ``masks``; bbox_visib, px_count_visib, visib_fract from ``masks_visib``), else taken from
    the instances' fields. Boxes follow bop_toolkit: ``[x_min, y_min, x_max - x_min, y_max - y_min]``.
    ``masks`` are clipped to the image: an instance that carries ``bbox_obj`` and ``px_count_all``
    (e.g. from :func:`featmap_ros.render.renderer.render_silhouette`, which keeps the parts
    outside the image as bop_toolkit does) has those written instead of the mask's. An exception inside the block leaves nothing at ``root``.

    Args:
        root: final dataset folder (replaced when complete, if it exists).
        split: split folder name (``train``, ``test``, ``train_pbr``...).
        image_format: ``"png"`` or ``"jpg"`` for colour images.
        jpeg_quality: quality for ``"jpg"``.
    """

    def __init__(self, root: str | os.PathLike, split: str = "test", image_format: str = "png", jpeg_quality: int = 95):
        if image_format not in ("png", "jpg"):
            raise InputError(f"BopWriter: image_format must be 'png' or 'jpg', got {image_format!r}")
        self.root = Path(root)
        self.split = split
        self.image_format = image_format
        self.jpeg_quality = int(jpeg_quality)
        self._stack: contextlib.ExitStack | None = None
        self._tmp: Path | None = None
        self._scenes: dict[int, dict[str, dict]] = {}

    def __enter__(self) -> "BopWriter":
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic.atomic_dir(self.root))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._stack is not None
        try:
            if exc_type is None:
                self._flush_scenes()
        except BaseException as e:  # flushing failed: discard the temp dir, then re-raise
            self._stack.__exit__(type(e), e, e.__traceback__)
            raise
        return bool(self._stack.__exit__(exc_type, exc, tb))

    @property
    def tmp_root(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("BopWriter used outside its 'with' block")
        return self._tmp

    def write_models(self, meshes: dict[int, Mesh], infos: dict[int, ModelInfo]) -> None:
        """Write ``models/obj_XXXXXX.ply`` (mm) and ``models/models_info.json``."""
        mdir = self.tmp_root / "models"
        mdir.mkdir(parents=True, exist_ok=True)
        for obj_id, mesh in meshes.items():
            save_mesh(mdir / f"obj_{int(obj_id):06d}.ply", mesh, units="mm")
        atomic.write_json(mdir / "models_info.json", models_info_to_json(infos))

    def add_frame(
        self,
        scene_id: int,
        im_id: int,
        K: np.ndarray,
        instances: Sequence[GtInstance],
        rgb: np.ndarray | None = None,
        depth_m: np.ndarray | None = None,
        masks: Sequence[np.ndarray] | None = None,
        masks_visib: Sequence[np.ndarray] | None = None,
        depth_scale: float = 1.0,
    ) -> None:
        """Add one frame.

        Args:
            scene_id, im_id: ids.
            K: (3, 3) intrinsics, pixels.
            instances: ground truth (``R_m2c``, ``t_m2c_m`` metres).
            rgb: (H, W, 3) uint8 RGB or None.
            depth_m: (H, W) float metres (0 = none) or None; stored as uint16 of mm / depth_scale.
            masks: per instance (H, W) bool full silhouettes, or None.
            masks_visib: per instance (H, W) bool visible parts, or None.
            depth_scale: millimetres per depth unit.
        """
        sdir = self.tmp_root / self.split / f"{int(scene_id):06d}"
        scene = self._scenes.setdefault(int(scene_id), {"cam": {}, "gt": {}, "info": {}})
        key = str(int(im_id))
        if key in scene["cam"]:
            raise InputError(f"BopWriter: scene {scene_id} im_id {im_id} written twice")
        K = geometry.check_K(K)
        scene["cam"][key] = {"cam_K": K.reshape(-1).tolist(), "depth_scale": float(depth_scale)}
        scene["gt"][key] = [
            {
                "cam_R_m2c": np.asarray(g.R_m2c, float).reshape(-1).tolist(),
                "cam_t_m2c": (np.asarray(g.t_m2c_m, float).reshape(3) * 1000.0).tolist(),
                "obj_id": int(g.obj_id),
            }
            for g in instances
        ]
        infos = []
        for i, g in enumerate(instances):
            if masks is not None:
                m = np.asarray(masks[i], bool)
                mv = np.asarray(masks_visib[i], bool) if masks_visib is not None else m
                n_all, n_vis = int(m.sum()), int(mv.sum())
                bbox_obj = _bbox_of(m)
                if g.bbox_obj is not None and g.px_count_all is not None:
                    n_all, bbox_obj = int(g.px_count_all), [int(x) for x in g.bbox_obj]
                valid = int(m.sum())
                if depth_m is not None:
                    valid = int((m & (np.asarray(depth_m) > 0)).sum())
                infos.append({
                    "bbox_obj": bbox_obj, "bbox_visib": _bbox_of(mv), "px_count_all": n_all,
                    "px_count_valid": valid, "px_count_visib": n_vis,
                    "visib_fract": float(n_vis / n_all) if n_all else 0.0,
                })
            else:
                infos.append({
                    "bbox_obj": list(g.bbox_obj) if g.bbox_obj is not None else [-1, -1, -1, -1],
                    "bbox_visib": list(g.bbox_visib) if g.bbox_visib is not None else [-1, -1, -1, -1],
                    "px_count_all": int(g.px_count_all or 0),
                    "px_count_valid": int(g.px_count_all or 0),
                    "px_count_visib": int(round((g.visib_fract or 0.0) * (g.px_count_all or 0))),
                    "visib_fract": float(g.visib_fract or 0.0),
                })
        scene["info"][key] = infos
        name = f"{int(im_id):06d}"
        if rgb is not None:
            (sdir / "rgb").mkdir(parents=True, exist_ok=True)
            rgb = np.asarray(rgb)
            if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                raise InputError(f"BopWriter: rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            if self.image_format == "jpg":
                if not cv2.imwrite(str(sdir / "rgb" / f"{name}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]):
                    raise InputError(f"{sdir / 'rgb'}: cannot write image")
            else:
                _write_png(sdir / "rgb" / f"{name}.png", bgr)
        if depth_m is not None:
            (sdir / "depth").mkdir(parents=True, exist_ok=True)
            units = np.round(np.asarray(depth_m, np.float64) * 1000.0 / depth_scale)
            _write_png(sdir / "depth" / f"{name}.png", np.clip(units, 0, 65535).astype(np.uint16))
        for folder, ms in (("mask", masks), ("mask_visib", masks_visib)):
            if ms is None:
                continue
            (sdir / folder).mkdir(parents=True, exist_ok=True)
            for i, m in enumerate(ms):
                _write_png(sdir / folder / f"{name}_{i:06d}.png", np.asarray(m, bool).astype(np.uint8) * 255)

    def _flush_scenes(self) -> None:
        for scene_id, scene in self._scenes.items():
            sdir = self.tmp_root / self.split / f"{scene_id:06d}"
            sdir.mkdir(parents=True, exist_ok=True)
            order = sorted(scene["cam"], key=int)
            for fname, k in (("scene_camera.json", "cam"), ("scene_gt.json", "gt"), ("scene_gt_info.json", "info")):
                atomic.write_json(sdir / fname, {i: scene[k][i] for i in order})

    def write_split(self, name: str, im_ids: Iterable[int]) -> None:
        """Write a split file ``<root>/<name>`` (one im_id per line)."""
        write_split_file(self.tmp_root / name, im_ids)
