"""Checkpoints: the contract between training and inference.

One home for what a ``.pt`` file of this project holds and how it is read:

- :func:`save_checkpoint` / :func:`load_checkpoint` (atomic writes; checks of format, task and
  architecture that name the file and the field);
- :func:`safe_torch_load`: every ``.pt`` (checkpoints, data caches) is read with
  ``torch.load(weights_only=True)``, so a crafted file cannot run code while it loads — only
  tensors, containers, numbers and strings (and plain numpy arrays) are accepted;
- :class:`ObjectMeta` / :class:`HandMeta`: the typed task facts the estimators read;
- the bundled weights' paths, the device choice, and checkpoint surgery (slim export, map-level
  re-labelling).
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featmap_ros import atomic
from featmap_ros.config import from_dict, to_dict
from featmap_ros.errors import InputError
from featmap_ros.nets import FeatureMappingNet, ModelConfig, build_model

CHECKPOINT_FORMAT = "featmap_ros.checkpoint/1"
#: the bundled weights (demo object and hand models, hand-centre refiner).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: window side / box side of an object crop when a checkpoint does not say (crops.window_from_bbox).
DEFAULT_WINDOW_SCALE = 1.2
#: side of the hand crop cube, mm (DeepPrior).
DEFAULT_CUBE_MM = 300.0
#: how a hand checkpoint's crops are centred (HandMeta.centre).
HAND_CENTRES = ("palm", "com")


def _numpy_safe_globals() -> list:
    """The numpy pieces a plain array's pickle names (no code runs through them)."""
    core = getattr(np, "_core", None) or np.core
    out = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    out += [type(np.dtype(t)) for t in ("b", "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8", "?")]
    return out


def safe_torch_load(path: str | Path, what: str = "file") -> Any:
    """``torch.load`` that cannot run code: ``weights_only=True`` with plain numpy arrays allowed.

    Args:
        path: the ``.pt`` file.
        what: what the file is, for the error message (``checkpoint``, ``data cache``).

    Raises:
        InputError: missing or unreadable file, or a pickle that asks for anything else (the
            message names the file and what torch refused).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {what} not found")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for a refused global; many kinds for a corrupt file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise InputError(f"{p}: unreadable or unsafe {what}, not loaded ({e.__class__.__name__}: {msg[:300]})") from None


def rng_state() -> dict:
    """Python, numpy and torch RNG states, as types :func:`safe_torch_load` accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    else:  # written before the numpy state was stored as a tensor
        np.random.set_state(n)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write a checkpoint dict atomically (temporary sibling, then ``os.replace``)."""
    with atomic.atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, task: str | None = None, model_cfg: ModelConfig | None = None) -> dict:
    """Read a checkpoint and check it is for ``task`` and (optionally) the architecture ``model_cfg``.

    Raises:
        InputError: missing/unreadable file, not a featmap_ros checkpoint, or a task/architecture
            mismatch; the message names the file and the field.
    """
    p = Path(path)
    ck = safe_torch_load(p, "checkpoint")
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{p}: not a featmap_ros checkpoint (field 'format' is {ck.get('format') if isinstance(ck, dict) else None!r}, expected {CHECKPOINT_FORMAT!r})")
    saved = ck["model_config"]
    if task is not None and saved.get("task") != task:
        raise InputError(f"{p}: field model.task is {saved.get('task')!r}, expected {task!r} (a checkpoint for the other task)")
    if model_cfg is not None:
        want = to_dict(model_cfg)
        defaults = to_dict(ModelConfig())  # fields added after a checkpoint was written take their defaults
        for key in want:
            if saved.get(key, defaults[key]) != want[key] and key not in ("pretrained",):
                raise InputError(f"{p}: field model.{key} is {saved.get(key)!r} in the checkpoint but {want[key]!r} in the config")
    return ck


def model_from_checkpoint(ck: dict, where: str = "checkpoint") -> FeatureMappingNet:
    """Rebuild f, g, h from a loaded checkpoint (no ImageNet download attempted)."""
    cfg = from_dict(ModelConfig, dict(ck["model_config"], pretrained=False), f"{where}: model_config")
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    if missing or unexpected:
        raise InputError(f"{where}: weights do not match model_config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def convert_map_level(src: str | Path, dst: str | Path, level: str) -> None:
    """Re-label a checkpoint for the other ``map_level`` (written atomically to ``dst``).

    The two levels compute the same h(f(x)) from the same weights; only the FC layers move
    between f (``f.fc.*``, level ``fc``) and h (``h.pre.*``, level ``conv``). g cannot be
    carried over (it maps a different space): the new g starts at its identity initialisation,
    so this is meant for stage-1 checkpoints (g untrained). Optimiser moments follow their
    parameters; those of g are dropped.
    """
    ck = load_checkpoint(src)
    old_cfg = from_dict(ModelConfig, dict(ck["model_config"], pretrained=False), f"{src}: model_config")
    new_cfg = from_dict(ModelConfig, dict(ck["model_config"], pretrained=False, map_level=level), f"{src}: model_config")
    old_model, new_model = build_model(old_cfg), build_model(new_cfg)
    to_new = {"conv": ("f.fc.", "h.pre."), "fc": ("h.pre.", "f.fc.")}[level]
    rename = lambda n: n.replace(*to_new)  # noqa: E731
    state = {rename(k): v for k, v in ck["model"].items() if not k.startswith("g.")}
    state.update({k: v for k, v in new_model.state_dict().items() if k.startswith("g.")})
    new_model.load_state_dict(state)
    old_names = [n for n, _ in old_model.named_parameters()]
    new_names = [n for n, _ in new_model.named_parameters()]
    opt = copy.deepcopy(ck["optimizer"])
    opt["state"] = {new_names.index(rename(old_names[i])): st for i, st in opt["state"].items() if not old_names[i].startswith("g.")}
    if len(opt["param_groups"]) != 1:
        raise InputError(f"{src}: expected one optimiser parameter group, found {len(opt['param_groups'])}")
    opt["param_groups"][0]["params"] = list(range(len(new_names)))
    out = dict(ck, model=new_model.state_dict(), optimizer=opt, teacher_f=None,
               model_config=dict(ck["model_config"], map_level=level))
    out["config"] = dict(ck.get("config", {}), model=out["model_config"])
    save_checkpoint(dst, out)


def export_checkpoint(src: str | Path, dst: str | Path, bundled: bool = False) -> None:
    """A slim copy of a checkpoint for inference (weights, configs, metadata, metrics; half the
    size or less: no optimiser, scaler or RNG state). Written atomically.

    ``bundled``: the form of the weights shipped in ``featmap_ros/weights`` (``lmo.pt``): floating
    weights as float16 (``weights_dtype``; loading casts them back to the model's float32), meshes
    by file name (resolved against a mesh root, see ``ObjectPoseEstimator(mesh_root=)``) and the
    config's local paths reduced to their last folder name.
    """
    ck = load_checkpoint(src)
    slim = {k: v for k, v in ck.items() if k not in ("optimizer", "scaler", "rng", "teacher_f")}
    slim["exported_from_step"] = ck.get("step")
    if bundled:
        slim["model"] = {k: v.half() if torch.is_floating_point(v) else v for k, v in slim["model"].items()}
        slim["weights_dtype"] = "float16"
        meta = dict(slim.get("meta") or {})
        if meta.get("mesh_paths"):
            meta["mesh_paths"] = [Path(p).name if p else p for p in meta["mesh_paths"]]
        slim["meta"] = meta
        data = dict((slim.get("config") or {}).get("data") or {})
        for key in ("models_root", "mesh", "real_root", "cache_dir"):
            if data.get(key) and data[key] != "toy":
                data[key] = f"<{Path(data[key]).name}>"
        if slim.get("config"):
            slim["config"] = {**slim["config"], "data": data}
    save_checkpoint(dst, slim)



def bundled_weights(task: str) -> Path:
    """Path of the bundled demo checkpoint of ``task`` (object | hand)."""
    p = WEIGHTS_DIR / f"demo_{task}.pt"
    if not p.is_file():
        raise InputError(f"{p}: bundled weights missing (reinstall the package, or train them: see README 'The demo')")
    return p


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU -> InputError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"device: must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device: {device!r} requested but no CUDA device is available")
    return torch.device(device)


@dataclass(frozen=True)
class ObjectMeta:
    """What an object checkpoint tells the estimator about its objects (head order).

    Attributes:
        object_names: (n,) names (vision_msgs class_id, TF child suffix).
        obj_ids: (n,) dataset object ids.
        corners_m: (n, 8, 3) float64 model-frame box corners, metres (BB8 targets).
        extents_m: (n, 3) float64 box sizes, metres.
        center_m: (n, 3) float64 box centres in the model frame, metres.
        diameter_m: (n,) model diameters, metres (empty = unknown).
        symmetric: (n,) symmetric objects (ADD-S), empty = unknown.
        window_scale: crop window side / box side, as in training.
        mesh_paths: (n,) meshes the model was trained on ('' = unknown).
        model_points_m: per object (N_k, 3) model points, metres (evaluation; may be empty).
        head: the pose head the checkpoint was trained with (``bb8`` | ``coords``; checkpoints
            written before the field existed are ``bb8``).
        coords_box_min_m, coords_box_size_m: (n, 3) float64 model boxes the ``coords`` head's
            coordinates are normalised to, metres (None for ``bb8``).
    """

    object_names: tuple[str, ...]
    obj_ids: tuple[int, ...]
    corners_m: np.ndarray
    extents_m: np.ndarray
    center_m: np.ndarray
    diameter_m: tuple[float, ...] = ()
    symmetric: tuple[bool, ...] = ()
    window_scale: float = DEFAULT_WINDOW_SCALE
    mesh_paths: tuple[str, ...] = ()
    model_points_m: tuple = ()
    head: str = "bb8"
    coords_box_min_m: np.ndarray | None = None
    coords_box_size_m: np.ndarray | None = None

    @classmethod
    def from_dict(cls, meta: dict, where: str = "meta") -> "ObjectMeta":
        """Parse a checkpoint's ``meta``; missing optional fields take the defaults above.

        Raises:
            InputError: a missing ``object_names``/``corners_m`` or a field of the wrong size,
                naming ``where`` and the field.
        """
        if not isinstance(meta, dict):
            raise InputError(f"{where}: expected a mapping, got {type(meta).__name__}")
        names = tuple(str(n) for n in meta.get("object_names", ()))
        if not names:
            raise InputError(f"{where}: field 'object_names' missing or empty")
        n = len(names)
        if "corners_m" not in meta:
            raise InputError(f"{where}: field 'corners_m' missing")
        try:
            corners = np.asarray(meta["corners_m"], dtype=np.float64).reshape(n, 8, 3)
            extents = np.asarray(meta.get("extents_m", np.ptp(corners, axis=1)), dtype=np.float64).reshape(n, 3)
            center = np.asarray(meta.get("center_m", corners.mean(axis=1)), dtype=np.float64).reshape(n, 3)
        except ValueError as e:
            raise InputError(f"{where}: corners_m/extents_m/center_m do not fit {n} objects ({e})") from None
        ids = tuple(int(i) for i in meta.get("obj_ids", range(1, n + 1)))
        if len(ids) != n:
            raise InputError(f"{where}: field 'obj_ids' has {len(ids)} entries for {n} objects")
        head = str(meta.get("head", "bb8"))
        if head not in ("bb8", "coords"):
            raise InputError(f"{where}: field 'head' is {head!r}, expected 'bb8' or 'coords'")
        box_min = box_size = None
        if head == "coords":
            for key in ("coords_box_min_m", "coords_box_size_m"):
                if key not in meta:
                    raise InputError(f"{where}: field {key!r} missing: a coords head needs each object's coordinate range")
            try:
                box_min = np.asarray(meta["coords_box_min_m"], dtype=np.float64).reshape(n, 3)
                box_size = np.asarray(meta["coords_box_size_m"], dtype=np.float64).reshape(n, 3)
            except ValueError as e:
                raise InputError(f"{where}: coords_box_min_m/coords_box_size_m do not fit {n} objects ({e})") from None
            if not np.all(box_size > 0):
                raise InputError(f"{where}: field 'coords_box_size_m' must be positive, got {box_size.tolist()}")
        return cls(names, ids, corners, extents, center,
                   tuple(float(x) for x in meta.get("diameter_m", ())), tuple(bool(x) for x in meta.get("symmetric", ())),
                   float(meta.get("window_scale", DEFAULT_WINDOW_SCALE)), tuple(str(x) for x in meta.get("mesh_paths", ())),
                   tuple(meta.get("model_points_m", ())), head, box_min, box_size)


@dataclass(frozen=True)
class HandMeta:
    """What a hand checkpoint tells the estimator.

    Attributes:
        joint_names: (J,) names of the predicted joints.
        cube_mm: side of the crop cube, mm.
        depth_range_m: (near, far) depth band of the run-time localiser, metres (None = its default).
        centre: how crops were centred in training, and so at run time: ``palm`` (the palm-centre
            joint in training; the localiser + learned refiner at run time; checkpoints without
            the field) or ``com`` (DeepPrior++'s refined centre of mass of the depth,
            :func:`featmap_ros.hand_localiser.refined_com_m`, in both).
    """

    joint_names: tuple[str, ...]
    cube_mm: float = DEFAULT_CUBE_MM
    depth_range_m: tuple[float, float] | None = None
    centre: str = "palm"

    @classmethod
    def from_dict(cls, meta: dict, n_joints: int, where: str = "meta") -> "HandMeta":
        """Parse a checkpoint's ``meta`` for a network predicting ``n_joints`` joints."""
        if not isinstance(meta, dict):
            raise InputError(f"{where}: expected a mapping, got {type(meta).__name__}")
        names = tuple(str(n) for n in meta.get("joint_names", [f"joint_{i}" for i in range(n_joints)]))
        if len(names) != n_joints:
            raise InputError(f"{where}: field 'joint_names' has {len(names)} names but the model predicts {n_joints} joints")
        rng = meta.get("depth_range_m")
        depth_range = None if rng is None else (float(rng[0]), float(rng[1]))
        centre = str(meta.get("centre", "palm"))
        if centre not in HAND_CENTRES:
            raise InputError(f"{where}: field 'centre' is {centre!r}; valid: {list(HAND_CENTRES)}")
        return cls(names, float(meta.get("cube_mm", DEFAULT_CUBE_MM)), depth_range, centre)


@dataclass(frozen=True)
class PseudoLabelRecord:
    """One estimate of ``featmap train adapt`` on an unlabelled frame, with its label-free scores.

    Attributes:
        scene_id, im_id: the frame (BOP numbering of the frames folder, or of the bag's frames).
        obj_id: the object.
        R_m2c: (9,) row-major rotation, model -> camera; t_m2c_m: (3,) metres (after refinement).
        score: the combined score the keep rule ranks; pnp, zoom, edge_peak, depth_fitness: its
            parts (``featmap_ros.training.adapt``; depth_fitness NaN without depth).
        kept: made a pseudo-pair this round.
        refined: '' | 'depth' | 'silhouette'.
    """

    scene_id: int
    im_id: int
    obj_id: int
    R_m2c: tuple
    t_m2c_m: tuple
    score: float
    pnp: float
    zoom: float
    edge_peak: float
    depth_fitness: float
    kept: bool
    refined: str = ""


@dataclass(frozen=True)
class AdaptRound:
    """One pseudo-label -> train round of ``featmap train adapt``.

    Attributes:
        round: 1-based.
        frames, estimates, kept, refined: counts.
        threshold: the lowest kept score (inf when nothing was kept).
        train_steps: g steps trained.
        label_seconds, seconds: wall time of the pseudo-labelling, and of the whole round.
        loss_pose_real, loss_feature_match: the training losses at the round's end.
        labels: every estimate of the round (:class:`PseudoLabelRecord`).
    """

    round: int
    frames: int
    estimates: int
    kept: int
    threshold: float
    refined: int
    train_steps: int
    label_seconds: float
    seconds: float
    loss_pose_real: float
    loss_feature_match: float
    labels: tuple = ()


@dataclass(frozen=True)
class AdaptationRecord:
    """What a checkpoint written by ``featmap train adapt`` was adapted on (``ck["adaptation"]``).

    Attributes:
        source_checkpoint: the checkpoint adapted.
        frames: where the frames came from (a BOP folder, or ``bag:<path> topic <topic>``).
        split: the split folder read.
        n_frames: frames used.
        config: the resolved :class:`featmap_ros.training.adapt.AdaptConfig`.
        rounds: per round (:class:`AdaptRound`).
    """

    source_checkpoint: str
    frames: str
    split: str
    n_frames: int
    config: dict
    rounds: tuple = ()

    def to_dict(self) -> dict:
        """Plain containers (what :func:`safe_torch_load` reads back)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "adaptation") -> "AdaptationRecord":
        """Parse ``ck["adaptation"]``; InputError naming ``where`` and the field when malformed."""
        if not isinstance(d, dict):
            raise InputError(f"{where}: expected a mapping, got {type(d).__name__}")
        try:
            rounds = []
            for k, r in enumerate(d.get("rounds", ())):
                labels = tuple(PseudoLabelRecord(**{**lab, "R_m2c": tuple(lab["R_m2c"]), "t_m2c_m": tuple(lab["t_m2c_m"])})
                               for lab in r.get("labels", ()))
                rounds.append(AdaptRound(**{**r, "labels": labels}))
            return cls(str(d["source_checkpoint"]), str(d["frames"]), str(d.get("split", "test")), int(d["n_frames"]),
                       dict(d.get("config", {})), tuple(rounds))
        except (KeyError, TypeError) as e:
            raise InputError(f"{where}: malformed adaptation record ({e.__class__.__name__}: {e})") from None


def adaptation_of(ck: dict, where: str = "checkpoint") -> AdaptationRecord | None:
    """The :class:`AdaptationRecord` of a loaded checkpoint, None when it was not adapted."""
    d = ck.get("adaptation")
    return None if d is None else AdaptationRecord.from_dict(d, f"{where}: adaptation")
