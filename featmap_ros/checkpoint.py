"""TODO docstring."""
from __future__ import annotations
import copy
import random
from pathlib import Path
import numpy as np
import torch
from featmap_ros import atomic
from featmap_ros.config import from_dict, to_dict
from featmap_ros.errors import InputError
from featmap_ros.nets import FeatureMappingNet, ModelConfig, build_model


CHECKPOINT_FORMAT = "featmap_ros.checkpoint/1"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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
    if not p.is_file():
        raise InputError(f"{p}: checkpoint not found")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise InputError(f"{p}: unreadable checkpoint ({e.__class__.__name__}: {e})") from None
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


def export_checkpoint(src: str | Path, dst: str | Path) -> None:
    """A slim copy of a checkpoint for inference (weights, configs, metadata, metrics; half the
    size or less: no optimiser, scaler or RNG state). Written atomically."""
    ck = load_checkpoint(src)
    slim = {k: v for k, v in ck.items() if k not in ("optimizer", "scaler", "rng", "teacher_f")}
    slim["exported_from_step"] = ck.get("step")
    save_checkpoint(dst, slim)


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


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
