"""ONNX export of the estimators' network and an ONNX Runtime runner for it.

The exported graph is exactly what an estimator runs on its crops: ``model(x, real=use_mapping)``
of :class:`~featmap_ros.nets.FeatureMappingNet`, i.e. h(g(f(x))) with mapping or h(f(x))
without, for either mapping level (``map_level`` ``fc`` or ``conv``). Everything around the
network (crops, PnP, the object localiser, the hand-centre refiner) stays in torch/numpy.

Graph interface:

- input ``crops``: (N, C, S, S) float32; colour C = 3 in [0, 1] (ImageNet normalisation is
  inside the graph), depth C = 1 in [-1, 1]; N is a dynamic axis.
- output ``pose``: object (N, n_objects, 8, 2) crop-normalised corners; hand (N, n_joints, 3)
  crop-normalised metric joints.

``onnx`` and ``onnxruntime`` are dependencies of the default install, and ONNX Runtime is the
default runtime of the networks (:data:`DEFAULT_RUNTIME`); where they are missing or the export,
the session or a run fails, the estimators fall back to torch and log why, once
(:func:`ort_or_torch`). Asking for them directly (``featmap export onnx``) when absent raises
:class:`~featmap_ros.errors.InputError` naming the package.
The exporter is torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``), which
torch 2.15 still ships (with a deprecation warning that is silenced here); it needs no
``onnxscript``.
"""
from __future__ import annotations

import copy
import importlib
import io
import logging
import warnings
from pathlib import Path
from collections.abc import Callable
from types import ModuleType

import numpy as np
import torch
from torch import nn

from featmap_ros import atomic
from featmap_ros.errors import InputError
from featmap_ros.nets import FeatureMappingNet

log = logging.getLogger(__name__)

#: What can run the networks; the default first (4-5x faster than torch for these small
#: networks on a CPU: docs/benchmarks.md).
RUNTIMES = ("onnxruntime", "torch")
DEFAULT_RUNTIME = RUNTIMES[0]

#: ONNX operator set of the exported graphs (ONNX Runtime >= 1.16 runs it).
OPSET = 17
INPUT_NAME = "crops"
OUTPUT_NAME = "pose"


def require(package: str) -> ModuleType:
    """Import an optional package (``onnx`` or ``onnxruntime``) or raise InputError naming it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise InputError(
            f"runtime: the Python package {package!r} is not installed; "
            f"install it with `pip install {package}` (a dependency of `pip install -e .`)"
        ) from None


class _Served(nn.Module):
    """The network as an estimator calls it: crops -> pose, with or without the mapping g."""

    def __init__(self, model: FeatureMappingNet, use_mapping: bool) -> None:
        super().__init__()
        self.model = model
        self.use_mapping = bool(use_mapping)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, real=self.use_mapping)


def _input_shape(model: FeatureMappingNet, input_shape) -> tuple[int, int, int]:
    cfg = model.cfg
    want = (cfg.in_channels, cfg.input_size, cfg.input_size)
    if input_shape is None:
        return want
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:  # (N, C, S, S): N is dynamic anyway
        shape = shape[1:]
    if shape != want:
        raise InputError(f"input_shape: the model takes crops of (C, S, S) = {want}, got {tuple(input_shape)}")
    return shape


def _export_to(model: FeatureMappingNet, target, input_shape, use_mapping: bool) -> None:
    if not isinstance(model, FeatureMappingNet):
        raise InputError(f"model: expected a FeatureMappingNet, got {type(model).__name__}")
    shape = _input_shape(model, input_shape)
    # a float32 CPU copy in eval mode: the caller's model (maybe fp16 on a GPU, maybe training)
    # is left untouched
    served = _Served(copy.deepcopy(model).float().cpu(), use_mapping).eval()
    dummy = torch.zeros((1, *shape), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(
            served, (dummy,), target, dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )


def export_onnx_bytes(model: FeatureMappingNet, input_shape: tuple[int, ...] | None = None,
                      use_mapping: bool = True) -> bytes:
    """The serialised ONNX model of ``model(x, real=use_mapping)`` (see :func:`export_onnx`)."""
    buf = io.BytesIO()
    _export_to(model, buf, input_shape, use_mapping)
    return buf.getvalue()


def export_onnx(model: FeatureMappingNet, path: str | Path, input_shape: tuple[int, ...] | None = None,
                use_mapping: bool = True) -> Path:
    """Write the estimator's network as an ONNX file, atomically.

    Args:
        model: f, g, h (any device/dtype/mode; a float32 CPU eval copy is exported).
        path: output ``.onnx`` file (parent folders are created).
        input_shape: (C, S, S) or (N, C, S, S) of the crops; None = from ``model.cfg``. The
            batch axis is always dynamic.
        use_mapping: export h(g(f(x))) (real images, the estimators' default for a model
            trained with mapping) or h(f(x)).

    Returns:
        The path written. The file passes ``onnx.checker.check_model``.

    Raises:
        InputError: ``onnx`` not installed, or an input shape the model does not take.
    """
    onnx = require("onnx")
    data = export_onnx_bytes(model, input_shape, use_mapping)
    onnx.checker.check_model(onnx.load_from_string(data))
    out = Path(path)
    atomic.write_bytes(out, data)
    return out


def ort_providers(device: str = "cpu") -> list[str]:
    """Execution providers for ``device`` (``cpu`` | ``cuda``): CUDA first when ONNX Runtime has it."""
    ort = require("onnxruntime")
    available = ort.get_available_providers()
    providers = ["CUDAExecutionProvider"] if device.startswith("cuda") and "CUDAExecutionProvider" in available else []
    if device.startswith("cuda") and not providers:
        log.warning("device %s: this ONNX Runtime has no CUDAExecutionProvider (install onnxruntime-gpu); "
                    "the network runs on the CPU", device)
    return providers + ["CPUExecutionProvider"]


class OrtRunner:
    """An ONNX Runtime session of an exported network: (N, C, S, S) float32 -> pose numbers.

    Args:
        model_onnx: a ``.onnx`` path or the serialised bytes.
        device: ``cpu`` or ``cuda`` (CUDA provider used only when ONNX Runtime has it).
        threads: intra-op threads; None = ``torch.get_num_threads()`` so torch and ORT are
            compared on equal terms (both follow ``OMP_NUM_THREADS``).
    """

    def __init__(self, model_onnx: bytes | str | Path, device: str = "cpu", threads: int | None = None) -> None:
        ort = require("onnxruntime")
        if isinstance(model_onnx, (str, Path)):
            p = Path(model_onnx)
            if not p.is_file():
                raise InputError(f"{p}: ONNX model not found")
            model_onnx = str(p)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads if threads is not None else torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting pool threads between calls: the crops, PnP and localiser that run
        # after the network (and a ROS node's other callbacks) need those cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(model_onnx, sess_options=opts, providers=ort_providers(device))
        except Exception as e:  # ORT raises its own exception types for unreadable graphs
            where = model_onnx if isinstance(model_onnx, str) else "ONNX model"
            raise InputError(f"{where}: ONNX Runtime cannot load it ({e.__class__.__name__}: {e})") from None
        self.providers = self.session.get_providers()

    @classmethod
    def from_model(cls, model: FeatureMappingNet, use_mapping: bool = True, device: str = "cpu",
                   threads: int | None = None) -> "OrtRunner":
        """Export ``model(x, real=use_mapping)`` in memory and open a session on it."""
        return cls(export_onnx_bytes(model, None, use_mapping), device=device, threads=threads)

    def run(self, crops_nchw: np.ndarray) -> np.ndarray:
        """Pose numbers of a crop batch.

        Args:
            crops_nchw: (N, C, S, S) crops (any float dtype; converted to float32).

        Returns:
            (N, ...) float32, the network's output shape (see module docstring).
        """
        x = np.ascontiguousarray(crops_nchw, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def check_onnx(model: FeatureMappingNet, path: str | Path | bytes, use_mapping: bool = True,
               batch_sizes: tuple[int, ...] = (1, 3), seed: int = 0) -> float:
    """Max abs difference between ONNX Runtime and torch on random crops.

    Args:
        model: the network that was exported (not modified: a float32 CPU eval copy is run).
        path: the ``.onnx`` file (or its bytes).
        use_mapping: as exported.
        batch_sizes: batch sizes tried (checks the dynamic batch axis).
        seed: random inputs' seed (uniform in the input range of the task).

    Returns:
        max |ORT - torch| over all outputs of all batches (crop-normalised units).
    """
    runner = OrtRunner(path, device="cpu")
    ref = _Served(copy.deepcopy(model).float().cpu(), use_mapping).eval()
    cfg = model.cfg
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n in batch_sizes:
        x = rng.uniform(0.0, 1.0, (n, cfg.in_channels, cfg.input_size, cfg.input_size)).astype(np.float32)
        if cfg.task == "hand":
            x = 2.0 * x - 1.0
        with torch.no_grad():
            want = ref(torch.from_numpy(x)).numpy()
        got = runner.run(x)
        if got.shape != want.shape:
            raise InputError(f"{path if not isinstance(path, bytes) else 'ONNX model'}: output shape {got.shape}, torch gives {want.shape}")
        worst = max(worst, float(np.max(np.abs(got - want))))
    return worst


def check_ort_device(device: str) -> None:
    """Raise InputError when ``device`` is a GPU this ONNX Runtime cannot use (no
    CUDAExecutionProvider: the CPU-only ``onnxruntime`` wheel): there torch on the GPU is the
    better runtime, not ONNX Runtime on the CPU."""
    if device.startswith("cuda") and "CUDAExecutionProvider" not in require("onnxruntime").get_available_providers():
        raise InputError(f"device {device}: this ONNX Runtime has no CUDAExecutionProvider (install onnxruntime-gpu)")


def ort_or_torch(make: Callable[[], "OrtRunner"], what: str) -> tuple["OrtRunner | None", str]:
    """An ONNX Runtime runner, or ``(None, why)`` when it cannot be had (onnx or onnxruntime
    missing, the export or the session failing); ``why`` is logged once, here, as a warning.

    Args:
        make: builds the runner (exports the network, opens the session).
        what: the network, for the message ("object f, g, h", "hand-centre refiner").

    Returns:
        (runner, "") or (None, "<what>: ONNX Runtime unavailable (...): torch runs it").
    """
    try:
        return make(), ""
    except Exception as e:  # noqa: BLE001 - any failure of the optional runtime means torch
        why = f"{what}: ONNX Runtime unavailable ({type(e).__name__}: {e}): torch runs it"
        log.warning(why)
        return None, why
