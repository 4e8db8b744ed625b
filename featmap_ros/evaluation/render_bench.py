"""Object rendering speed: what ``featmap bench render`` prints for the colour task.

Measures, in one process with one :class:`MeshRenderer` (one GL context):

- ``crops_per_s``: complete synthetic training crops, as :class:`SyntheticObjectDataset` makes
  them (pose sampling, randomised lighting, ``size x size`` crop render, procedural background,
  compositing, conversion to a float tensor);
- ``crop_renders_per_s``: the ``size x size`` crop render alone;
- ``frames_per_s``: full 640 x 480 lit renders of the same object.

The object is the project's toy mesh unless a mesh is given. Each figure is the number of
completed items divided by the wall time of a loop of about ``seconds`` (after one warm-up call).
"""
from __future__ import annotations

import time

import numpy as np

from featmap_ros.crops import Window
from featmap_ros.data.backgrounds import BackgroundSource
from featmap_ros.data.object_samples import PoseSampling, SyntheticObjectDataset
from featmap_ros.data.specs import object_dataset
from featmap_ros.render.renderer import MeshRenderer, random_lighting
from featmap_ros.render.toy_object import make_toy_object


def _rate(fn, seconds: float) -> tuple[float, int]:
    fn(0)  # warm-up: mesh upload, shader compilation, framebuffer allocation
    n, t0 = 0, time.perf_counter()
    while True:
        fn(n + 1)
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt, n


def run_object_render_bench(seconds: float = 5.0, size: int = 128, mesh=None, info=None) -> dict:
    """Measure object rendering speed (see the module docstring).

    Args:
        seconds: duration of each measurement.
        size: crop side, pixels.
        mesh, info: object to render (default: the toy object).

    Returns:
        dict with ``backend`` (GL renderer string), ``mesh_faces``, ``crop_size``, ``crops_per_s``,
        ``crop_renders_per_s``, ``frame_size``, ``frames_per_s``, and the item counts.
    """

    if mesh is None:
        mesh, info = make_toy_object()
    spec = object_dataset("lm")
    K = np.array([[spec.fx, 0.0, spec.cx], [0.0, spec.fy, spec.cy], [0.0, 0.0, 1.0]])
    ds = SyntheticObjectDataset(mesh, info, K, spec.width, spec.height, crop_size=size,
                                sampling=PoseSampling.from_spec(spec), seed=0)
    report: dict = {"mesh_faces": int(len(mesh.faces)), "crop_size": int(size)}
    backgrounds = BackgroundSource(None)
    with MeshRenderer(size, size) as crop_renderer:
        report["backend"] = crop_renderer.backend
        report["crops_per_s"], report["crops"] = _rate(lambda i: ds.make_sample(i, crop_renderer, backgrounds), seconds)
        sample = ds.make_sample(0, crop_renderer, backgrounds)
        window = sample["window"].numpy().astype(np.float64)
        R, t = sample["R_m2c"].numpy().astype(np.float64), sample["t_m2c_m"].numpy().astype(np.float64)

        win = Window(*window)
        rng = np.random.default_rng(0)
        report["crop_renders_per_s"], report["crop_renders"] = _rate(
            lambda i: crop_renderer.render_crop(mesh, R, t, K, win, size, lighting=random_lighting(rng)), seconds
        )
    with MeshRenderer(spec.width, spec.height) as frame_renderer:
        report["frame_size"] = f"{spec.width}x{spec.height}"
        report["frames_per_s"], report["frames"] = _rate(
            lambda i: frame_renderer.render(mesh, R, t, K, lighting=random_lighting(rng)), seconds
        )
    return report
