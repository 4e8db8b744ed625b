"""Offscreen mesh rendering with pyrender: colour, depth and mask at an exact pinhole camera.

One :class:`MeshRenderer` owns one OpenGL context (EGL: software Mesa llvmpipe here, the NVIDIA
driver on a GPU machine) and one scene; meshes are uploaded once, the first time they are drawn,
and reused by every later call. A renderer is not thread-safe and belongs to one process (each
DataLoader worker makes its own).

Camera conventions: poses are given in the OpenCV optical frame (x right, y down, z forward,
``p_c = R_m2c p_m + t_m2c_m``); the renderer flips to OpenGL's camera (y up, looking down -z)
internally. Pixel centres are at integer coordinates, as in OpenCV and :mod:`featmap_ros.geometry`:
OpenGL puts the centre of pixel ``i`` at ``i + 0.5``, so the principal point is shifted by half a
pixel when building the GL projection. A test checks silhouettes against projected box corners.

Crops: :meth:`MeshRenderer.render_crop` renders only a :class:`featmap_ros.crops.Window` at crop
resolution with ``K' = A K`` (A from ``Window.affine_to_crop``), so a 128 x 128 crop never pays for
a 640 x 480 frame, and the result is pixel-aligned with ``crops.crop_image`` of the full image.

Lighting (:class:`Lighting`): ambient + one directional or point light, PBR material (metallic,
roughness) multiplied by the vertex colours; ``flat=True`` draws the vertex colours unlit.
:func:`random_lighting` samples the randomisation used for synthetic training.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from featmap_ros import geometry
from featmap_ros.crops import Window
from featmap_ros.errors import InputError

#: OpenCV optical frame -> OpenGL camera frame.
CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def _preload_triton() -> None:
    """Load Triton's LLVM before Mesa's.

    Mesa's software EGL (llvmpipe) and Triton each bring their own LLVM. Once a Mesa context
    exists, a later ``import triton`` (which ``torch._dynamo`` does, e.g. when an optimiser
    is built) crashes the process with a segmentation fault; loaded the other way round,
    both work.
    """
    try:
        import triton  # noqa: F401
    except ImportError:
        pass


def _pyrender():
    """Import pyrender lazily, choosing EGL (headless) unless the user chose a platform."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    _preload_triton()
    import pyrender

    return pyrender


@dataclass(frozen=True)
class RenderOutput:
    """What one render call produces.

    Attributes:
        rgb: (H, W, 3) uint8 colour over black, anti-aliased: edge pixels are premultiplied by
            their coverage ``alpha``; background pixels are 0.
        depth_m: (H, W) float32 z distance along the optical axis, metres; 0 outside ``mask``.
        mask: (H, W) bool, True where a mesh covers at least half of the pixel (its silhouette).
        alpha: (H, W) float32 coverage in [0, 1] (4x multisampling).
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    mask: np.ndarray
    alpha: np.ndarray


@dataclass(frozen=True)
class Lighting:
    """Light and material of one render.

    Attributes:
        ambient: grey ambient intensity (0 = none).
        light_intensity: intensity of the main light (pyrender units; ~2-6 for a directional light,
            W for a point light: ~ intensity / distance^2 reaches the object).
        light_dir_c: (3,) direction the directional light travels, camera optical frame
            (default: from the camera towards the scene).
        light_color: (3,) RGB in [0, 1].
        point_light_c_m: (3,) position of a point light in the camera optical frame, metres, or None
            for a directional light.
        metallic: material metallic factor in [0, 1].
        roughness: material roughness in [0, 1] (low = sharp specular highlights).
        color_gain: (3,) per-channel multiplier of the vertex colours (material base colour).
        flat: draw vertex colours unlit (ignores the fields above except ``color_gain``).
    """

    ambient: float = 0.45
    light_intensity: float = 3.0
    light_dir_c: tuple = (0.0, 0.0, 1.0)
    light_color: tuple = (1.0, 1.0, 1.0)
    point_light_c_m: tuple | None = None
    metallic: float = 0.0
    roughness: float = 0.8
    color_gain: tuple = (1.0, 1.0, 1.0)
    flat: bool = False


def random_lighting(rng: np.random.Generator) -> Lighting:
    """Lighting and material randomisation for synthetic training renders.

    Ambient 0.2-0.7, a directional light of intensity 1.5-5 from a random direction within 60
    degrees of the optical axis, slightly tinted (each channel 0.85-1), matte to semi-glossy
    material (metallic 0-0.2, roughness 0.5-1), base-colour gain 0.85-1.15 per channel.
    """
    theta = np.radians(rng.uniform(0.0, 60.0))
    phi = rng.uniform(0.0, 2 * np.pi)
    d = (np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta))
    return Lighting(
        ambient=float(rng.uniform(0.2, 0.7)),
        light_intensity=float(rng.uniform(1.5, 5.0)),
        light_dir_c=tuple(float(x) for x in d),
        light_color=tuple(float(x) for x in rng.uniform(0.85, 1.0, 3)),
        metallic=float(rng.uniform(0.0, 0.2)),
        roughness=float(rng.uniform(0.5, 1.0)),
        color_gain=tuple(float(x) for x in rng.uniform(0.85, 1.15, 3)),
    )


def crop_intrinsics(K: np.ndarray, window: Window, size: int) -> np.ndarray:
    """Intrinsics of a ``size x size`` crop of ``window``: ``K' = A K``.

    Args:
        K: (3, 3) full-image intrinsics, pixels.
        window: the crop window in full-image pixels.
        size: crop side, pixels.

    Returns:
        (3, 3) float64 crop intrinsics (crop pixels, centres at integers).
    """
    A = np.vstack([window.affine_to_crop(size), [0.0, 0.0, 1.0]])
    return A @ geometry.check_K(K)


def fill_depth_holes(depth_m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give pixels of ``mask`` without depth the nearest depth among their 3x3 neighbours.

    Args:
        depth_m: (H, W) float32 depth, 0 = none.
        mask: (H, W) bool pixels that must have a depth.

    Returns:
        (H, W) float32 new depth (pixels with no neighbour depth stay 0).
    """
    import cv2

    depth = np.array(depth_m, dtype=np.float32)
    holes = np.asarray(mask, bool) & (depth <= 0)
    if holes.any():
        d_inf = np.where(depth > 0, depth, np.float32(np.inf))
        near = cv2.erode(d_inf, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
        depth[holes] = np.where(np.isfinite(near[holes]), near[holes], 0.0)
    return depth


def _rotation_from_dir(d: np.ndarray) -> np.ndarray:
    """A rotation whose -z axis (the direction a GL light shines) is ``d``."""
    z = -np.asarray(d, dtype=np.float64)
    z /= max(np.linalg.norm(z), 1e-12)
    a = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(a, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


class MeshRenderer:
    """Render meshes at poses with one reused offscreen context.

    Args:
        width, height: default output size, pixels.
        znear, zfar: clipping distances, metres.

    Example::

        r = MeshRenderer(640, 480)
        out = r.render(mesh, R_m2c, t_m2c_m, K)        # RenderOutput
        crop = r.render_crop(mesh, R_m2c, t_m2c_m, K, window, 128)
        r.close()
    """

    def __init__(self, width: int = 640, height: int = 480, znear: float = 0.01, zfar: float = 20.0):
        if int(width) <= 0 or int(height) <= 0:
            raise InputError(f"MeshRenderer: size must be positive, got {width}x{height}")
        pyrender = _pyrender()
        self.width, self.height = int(width), int(height)
        self.znear, self.zfar = float(znear), float(zfar)
        self._renderer = pyrender.OffscreenRenderer(self.width, self.height)
        self._scene = pyrender.Scene(bg_color=np.zeros(4), ambient_light=np.zeros(3))
        self._camera = pyrender.IntrinsicsCamera(1.0, 1.0, 0.0, 0.0, znear=self.znear, zfar=self.zfar)
        self._cam_node = self._scene.add(self._camera, pose=np.eye(4))
        self._dir_light = pyrender.DirectionalLight(color=np.ones(3), intensity=0.0)
        self._dir_node = self._scene.add(self._dir_light, pose=np.eye(4))
        self._point_light = pyrender.PointLight(color=np.ones(3), intensity=0.0)
        self._point_node = self._scene.add(self._point_light, pose=np.eye(4))
        # id(Mesh) -> (the Mesh, kept alive so its id stays unique; pyrender mesh; its nodes)
        self._meshes: dict[int, tuple] = {}
        self._backend: str | None = None

    # ---------------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """The OpenGL renderer string of this context (e.g. ``llvmpipe (LLVM 15...)``, an NVIDIA GPU)."""
        if self._backend is None:
            from OpenGL import GL

            self._renderer._platform.make_current()
            vendor = GL.glGetString(GL.GL_RENDERER)
            version = GL.glGetString(GL.GL_VERSION)
            self._backend = (
                f"{os.environ.get('PYOPENGL_PLATFORM', '?')}: "
                f"{vendor.decode() if vendor else '?'}, OpenGL {version.decode() if version else '?'}"
            )
        return self._backend

    def close(self) -> None:
        """Release this renderer's GL context and resources (it cannot be used afterwards).

        pyrender's own ``delete`` also calls ``eglTerminate`` on the display, which every EGL
        context of the process shares, and so would break the other renderers alive in this
        process; with EGL only this renderer's context is destroyed here.
        """
        r = self._renderer
        if r is None:
            return
        self._renderer = None
        plat = getattr(r, "_platform", None)
        if type(plat).__name__ != "EGLPlatform" or getattr(plat, "_egl_display", None) is None:
            r.delete()
            return
        from OpenGL import EGL

        plat.make_current()
        r._renderer.delete()
        EGL.eglMakeCurrent(plat._egl_display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)
        if plat._egl_context is not None:
            EGL.eglDestroyContext(plat._egl_display, plat._egl_context)
            plat._egl_context = None
        plat._egl_display = None  # shared by the process: left initialised for the others

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: GL may be gone already
            pass

    def __enter__(self) -> "MeshRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------
    def _prepared(self, mesh) -> tuple:
        key = id(mesh)
        entry = self._meshes.get(key)
        if entry is not None and entry[0] is mesh:
            return entry
        pyrender = _pyrender()
        import trimesh

        v = np.asarray(mesh.vertices_m, dtype=np.float64)
        f = np.asarray(mesh.faces, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
            raise InputError(f"mesh {getattr(mesh, 'name', '')!r}: expected (N, 3) vertices and (F, 3) faces")
        tm = trimesh.Trimesh(v, f, process=False)
        normals = np.asarray(tm.vertex_normals, dtype=np.float32)
        # pyrender's lit shader works in linear RGB and gamma-encodes its output (1/2.2), but uses
        # vertex colours as they are: linearise the (sRGB) colours so that lit renders keep them
        srgb = np.asarray(mesh.colors, np.float32) / 255.0 if mesh.colors is not None else np.full((len(v), 3), 0.7, np.float32)
        colors = np.concatenate([srgb ** 2.2, np.ones((len(v), 1), np.float32)], 1)
        material = pyrender.MetallicRoughnessMaterial(
            baseColorFactor=np.ones(4), metallicFactor=0.0, roughnessFactor=0.8, alphaMode="OPAQUE"
        )
        prim = pyrender.Primitive(
            positions=v.astype(np.float32), normals=normals, color_0=colors, indices=f.astype(np.uint32),
            material=material, mode=4,
        )
        pm = pyrender.Mesh([prim])
        node = self._scene.add(pm, pose=np.eye(4))
        pm.is_visible = False
        entry = (mesh, pm, [node])
        self._meshes[key] = entry
        return entry

    def render(
        self,
        meshes,
        R_m2c: np.ndarray,
        t_m2c_m: np.ndarray,
        K: np.ndarray,
        lighting: Lighting | None = None,
        size: tuple[int, int] | None = None,
        depth_only: bool = False,
    ) -> RenderOutput:
        """Render one or several meshes.

        Args:
            meshes: a :class:`featmap_ros.data.bop.Mesh` (anything with ``vertices_m``, ``faces``,
                ``colors``) or a sequence of them (one per pose; the same mesh may repeat).
            R_m2c: (3, 3) or (n, 3, 3) rotations, model -> camera (OpenCV optical frame).
            t_m2c_m: (3,) or (n, 3) translations, metres.
            K: (3, 3) intrinsics for the output image, pixels.
            lighting: light and material (default :class:`Lighting`).
            size: (width, height) of the output; default the renderer's size.
            depth_only: unshaded, for masks and depth only; ``rgb`` is then all zeros.

        Returns:
            :class:`RenderOutput`.
        """
        if self._renderer is None:
            raise RuntimeError("MeshRenderer used after close()")
        pyrender = _pyrender()
        single = not isinstance(meshes, (list, tuple))
        mesh_list = [meshes] if single else list(meshes)
        R = np.asarray(R_m2c, dtype=np.float64).reshape(-1, 3, 3)
        t = np.asarray(t_m2c_m, dtype=np.float64).reshape(-1, 3)
        if not (len(mesh_list) == len(R) == len(t)):
            raise InputError(f"render: {len(mesh_list)} meshes but {len(R)} rotations and {len(t)} translations")
        K = geometry.check_K(K)
        w, h = (self.width, self.height) if size is None else (int(size[0]), int(size[1]))
        if w <= 0 or h <= 0:
            raise InputError(f"render: size must be positive, got {w}x{h}")
        light = lighting or Lighting()

        r = self._renderer
        if r.viewport_width != w or r.viewport_height != h:
            r.viewport_width, r.viewport_height = w, h
        cam = self._camera
        # Half-pixel shift: OpenCV pixel centres are integers, GL's are at +0.5.
        cam.fx, cam.fy, cam.cx, cam.cy = K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5
        if abs(K[0, 1]) > 1e-9:
            raise InputError(f"render: skewed intrinsics are not supported (K[0,1] = {K[0, 1]})")

        # Place meshes: first use of a mesh takes its permanent node, repeats get temporary nodes.
        for entry in self._meshes.values():
            entry[1].is_visible = False
        used: dict[int, int] = {}
        temp_nodes = []
        for i, mesh in enumerate(mesh_list):
            _, pm, nodes = self._prepared(mesh)
            pm.is_visible = True
            k = used.get(id(mesh), 0)
            used[id(mesh)] = k + 1
            T = np.eye(4)
            T[:3, :3] = R[i]
            T[:3, 3] = t[i]
            pose = CV_TO_GL @ T
            if k == 0:
                self._scene.set_pose(nodes[0], pose)
            else:
                node = self._scene.add(pm, pose=pose)
                temp_nodes.append(node)
            mat = pm.primitives[0].material
            mat.baseColorFactor = np.array([*light.color_gain, 1.0])
            mat.metallicFactor = float(light.metallic)
            mat.roughnessFactor = float(light.roughness)
        self._scene.ambient_light = np.full(3, float(light.ambient))
        lc = np.asarray(light.light_color, dtype=np.float64)
        if light.point_light_c_m is not None:
            self._dir_light.intensity = 0.0
            self._point_light.color, self._point_light.intensity = lc, float(light.light_intensity)
            P = np.eye(4)
            P[:3, 3] = light.point_light_c_m
            self._scene.set_pose(self._point_node, CV_TO_GL @ P)
        else:
            self._point_light.intensity = 0.0
            self._dir_light.color, self._dir_light.intensity = lc, float(light.light_intensity)
            P = np.eye(4)
            P[:3, :3] = _rotation_from_dir(np.asarray(light.light_dir_c, dtype=np.float64))
            self._scene.set_pose(self._dir_node, CV_TO_GL @ P)

        # RGBA: the resolved alpha is the 4x-MSAA coverage of each pixel. The mask comes from it
        # (coverage >= 1/2, unbiased), not from depth: pyrender's depth blit keeps one sample,
        # which is off the pixel centre (by (-1/8, +3/8) px on llvmpipe) and would bias silhouettes.
        flags = pyrender.RenderFlags.RGBA
        if depth_only or light.flat:
            flags |= pyrender.RenderFlags.FLAT
        try:
            rgba, depth = r.render(self._scene, flags=flags)
        finally:
            for node in temp_nodes:
                self._scene.remove_node(node)
        alpha = np.asarray(rgba[..., 3], dtype=np.float32) / 255.0
        mask = alpha >= 0.5
        depth = np.where(mask, np.asarray(depth, dtype=np.float32), np.float32(0.0))
        depth = fill_depth_holes(depth, mask)  # edge pixels whose (off-centre) depth sample missed
        if depth_only:
            rgb = np.zeros((h, w, 3), np.uint8)
        elif light.flat:
            # the flat shader skips the gamma encoding: undo the linearisation (on straight colour)
            a = np.maximum(alpha, 1e-6)[..., None]
            straight = np.asarray(rgba[..., :3], np.float32) / 255.0 / a
            straight = np.clip(straight, 0, 1) ** (1 / 2.2) * np.asarray(light.color_gain, np.float32)
            rgb = np.clip(straight * alpha[..., None] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            rgb = np.asarray(rgba[..., :3], dtype=np.uint8)
        return RenderOutput(np.ascontiguousarray(rgb), depth, mask, alpha)

    def render_crop(
        self,
        meshes,
        R_m2c: np.ndarray,
        t_m2c_m: np.ndarray,
        K: np.ndarray,
        window: Window,
        size: int,
        lighting: Lighting | None = None,
        depth_only: bool = False,
    ) -> RenderOutput:
        """Render only ``window`` of the full image, at ``size x size`` (see module docstring).

        Args:
            meshes, R_m2c, t_m2c_m, lighting, depth_only: as :meth:`render`.
            K: (3, 3) full-image intrinsics.
            window: crop window in full-image pixels.
            size: crop side, pixels.

        Returns:
            :class:`RenderOutput` of shape (size, size).
        """
        return self.render(meshes, R_m2c, t_m2c_m, crop_intrinsics(K, window, size), lighting, (size, size), depth_only)


@dataclass(frozen=True)
class Silhouette:
    """The full silhouette of one object, even where it leaves the image.

    Attributes:
        x0, y0: full-image pixel of ``mask[0, 0]`` (may be negative or beyond the image).
        mask: (h, w) bool silhouette inside its window.
    """

    x0: int
    y0: int
    mask: np.ndarray

    @property
    def px_count(self) -> int:
        """Pixels of the whole silhouette (BOP ``px_count_all``)."""
        return int(self.mask.sum())

    def bbox_xywh(self) -> list[int]:
        """BOP ``bbox_obj``: [x_min, y_min, x_max - x_min, y_max - y_min], unclipped; [-1, -1, -1, -1] if empty.

        Note BOP's width is ``x_max - x_min`` (not ``+ 1``), kept here so boxes compare directly.
        """
        ys, xs = np.nonzero(self.mask)
        if len(xs) == 0:
            return [-1, -1, -1, -1]
        return [int(self.x0 + xs.min()), int(self.y0 + ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())]

    def full_mask(self, width: int, height: int) -> np.ndarray:
        """(height, width) bool: the silhouette clipped to the image."""
        out = np.zeros((height, width), bool)
        h, w = self.mask.shape
        xa, ya = max(self.x0, 0), max(self.y0, 0)
        xb, yb = min(self.x0 + w, width), min(self.y0 + h, height)
        if xb > xa and yb > ya:
            out[ya:yb, xa:xb] = self.mask[ya - self.y0:yb - self.y0, xa - self.x0:xb - self.x0]
        return out


def render_silhouette(
    renderer: MeshRenderer,
    mesh,
    R_m2c: np.ndarray,
    t_m2c_m: np.ndarray,
    K: np.ndarray,
    margin_px: int = 2,
    supersample: int = 3,
    pixel_center: float = 0.0,
) -> Silhouette:
    """Render one object alone over the window its projected vertices span.

    Unlike a full-frame render, the silhouette keeps the parts outside the image (as BOP's
    ``px_count_all``/``bbox_obj``, which bop_toolkit renders on a 3x canvas), and costs only the
    object's own pixels. A pixel belongs to the silhouette when its centre is covered: the window
    is rendered ``supersample`` (odd) times larger and the sub-pixel at each pixel's centre is
    read, which shrinks the edge bias of the 4x multisample coverage test (1/8 px, ~1.5 % of the
    area of a small object) by that factor.

    Args:
        renderer: a renderer (its size is not used).
        mesh: the object's mesh (metres).
        R_m2c, t_m2c_m: pose, metres.
        K: (3, 3) intrinsics of the image, pixels.
        margin_px: window margin around the projected vertices.
        supersample: odd integer >= 1.
        pixel_center: coordinate of a pixel's centre relative to its index: 0 for OpenCV (this
            project's convention), 0.5 for bop_toolkit's renderer (its silhouettes sit half a pixel
            up-left of OpenCV projections).

    Returns:
        :class:`Silhouette`.

    Raises:
        InputError: the object reaches behind the near plane, or ``supersample`` is even.
    """
    if supersample < 1 or supersample % 2 == 0:
        raise InputError(f"render_silhouette: supersample must be odd and >= 1, got {supersample}")
    K = geometry.check_K(K)
    pc = np.asarray(mesh.vertices_m, np.float64) @ np.asarray(R_m2c, np.float64).reshape(3, 3).T + np.asarray(t_m2c_m, np.float64).reshape(3)
    if np.any(pc[:, 2] <= renderer.znear):
        raise InputError(f"render_silhouette: the object reaches behind the near plane (min z {pc[:, 2].min():.3f} m)")
    uv = geometry.project_points(pc, K) - pixel_center
    x0 = int(np.floor(uv[:, 0].min())) - margin_px
    y0 = int(np.floor(uv[:, 1].min())) - margin_px
    w = int(np.ceil(uv[:, 0].max())) + margin_px + 1 - x0
    h = int(np.ceil(uv[:, 1].max())) + margin_px + 1 - y0
    s = int(supersample)
    # window pixel (i, j) -> sub-pixel (s i + s//2, s j + s//2), whose centre is the pixel's centre
    Kw = K.copy()
    Kw[0, 2] -= x0 + pixel_center
    Kw[1, 2] -= y0 + pixel_center
    A = np.array([[s, 0.0, s // 2], [0.0, s, s // 2], [0.0, 0.0, 1.0]])
    out = renderer.render(mesh, R_m2c, t_m2c_m, A @ Kw, size=(w * s, h * s), depth_only=True)
    return Silhouette(x0, y0, out.mask[s // 2::s, s // 2::s].copy())


def composite(render: RenderOutput, background: np.ndarray) -> np.ndarray:
    """Paste a render over a background image of the same size, with anti-aliased edges.

    ``out = rgb + (1 - alpha) * background`` (``rgb`` is premultiplied by its coverage).

    Args:
        render: the render.
        background: (H, W, 3) uint8 image.

    Returns:
        (H, W, 3) uint8 new image.
    """
    bg = np.asarray(background)
    if bg.shape != render.rgb.shape:
        raise InputError(f"composite: background {bg.shape} differs from render {render.rgb.shape}")
    out = render.rgb.astype(np.float32) + (1.0 - render.alpha[..., None]) * bg.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def preload_torch_compiler() -> None:
    """Import torch's compiler stack (torch._dynamo, triton and its LLVM) before Mesa's llvmpipe.

    Seen here: a process that renders with pyrender (software Mesa, libLLVM) and then builds its
    first optimiser (AdamW imports torch._dynamo -> triton) segfaults in libLLVM; importing the
    compiler stack first avoids it. Called by every entry point that renders and then trains.
    """
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # an optional part of torch; training works without it
        pass
