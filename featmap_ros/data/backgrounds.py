"""Backgrounds for synthetic renders: a folder of the user's images, photographs that installed
packages ship, or procedural clutter.

BB8 and Feature Mapping paste renders over real photographs (LINEMOD frames, ImageNet, COCO);
:class:`BackgroundSource` takes any folder of such images (searched recursively for .jpg, .jpeg,
.png, .bmp) and returns random crops of them, rescaled and flipped.

``"photos"`` (:data:`PACKAGE_PHOTOS_KEY`) instead of a folder means the photographs that
well-known packages ship inside their wheels, so that nothing is downloaded
(:data:`PACKAGE_PHOTOS`, :func:`package_photos`):

- scikit-image (``skimage/data``, a dependency of featmap_ros): colour scenes astronaut, chelsea
  (a cat), coffee, rocket, motorcycle_left; grey scenes and textures camera, coins, brick, grass,
  gravel. Only files in the wheel: those that ``skimage.data`` fetches with pooch are not used.
- matplotlib (``mpl-data/sample_data``): grace_hopper.jpg, its one photograph.
- scikit-learn (``sklearn/datasets/images``, used when installed, not a dependency): china.jpg,
  flower.jpg.

Left out: scikit-image's microscopy, astronomy and medical images, text pages and synthetic
test patterns, and matplotlib's logos and product picture, which look like no scene a robot's
camera sees. A package that is not installed, or a file that a version of it no longer ships, is
skipped; with none of them, :class:`BackgroundSource` logs one warning and uses the procedural
fallback.

Without any photos, :func:`procedural_background` draws smooth colour gradients and multi-scale
noise with random rectangles, ellipses, polygons and lines, which gives edges and textures at
many scales but no real objects. Everything is drawn from the generator passed in, so a seed
reproduces it.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from featmap_ros.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

#: The ``backgrounds`` string meaning "the photographs bundled with installed packages"; a user's
#: folder of that name is given as ``./photos`` (or as a ``Path``).
PACKAGE_PHOTOS_KEY = "photos"

#: Photographs shipped inside package wheels: (import name, path inside the package).
PACKAGE_PHOTOS: tuple[tuple[str, str], ...] = (
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/camera.png"),
    ("skimage", "data/coins.png"),
    ("skimage", "data/brick.png"),
    ("skimage", "data/grass.png"),
    ("skimage", "data/gravel.png"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
)

_log = logging.getLogger(__name__)


def _package_dir(name: str) -> Path | None:
    # find_spec locates a package without importing it (scikit-image and scikit-learn take a
    # second or more to import, and only their files are needed)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_photos(table: tuple[tuple[str, str], ...] | None = None) -> list[Path]:
    """The photographs of ``table`` that are installed, in table order.

    Args:
        table: (import name, path inside the package) pairs, or None for :data:`PACKAGE_PHOTOS`.

    Returns:
        Existing image files; missing packages and files are skipped (maybe an empty list).
    """
    out = []
    dirs: dict[str, Path | None] = {}
    for pkg, rel in PACKAGE_PHOTOS if table is None else table:
        if pkg not in dirs:
            dirs[pkg] = _package_dir(pkg)
        base = dirs[pkg]
        if base is not None and (base / rel).is_file():
            out.append(base / rel)
    return out


def _is_package_photos(backgrounds) -> bool:
    return isinstance(backgrounds, str) and backgrounds == PACKAGE_PHOTOS_KEY


def background_files(backgrounds: str | os.PathLike | None) -> list[Path]:
    """The image files a ``data.backgrounds`` value names.

    Args:
        backgrounds: None or '' (procedural: no files), :data:`PACKAGE_PHOTOS_KEY` (the
            packages' photographs, maybe none), or a folder (:func:`list_images`).

    Raises:
        InputError: a folder that does not exist or holds no images.
    """
    if backgrounds is None or (isinstance(backgrounds, str) and backgrounds == ""):
        return []
    if _is_package_photos(backgrounds):
        return package_photos()
    return list_images(backgrounds)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted so that a seed picks the same ones.

    Raises:
        InputError: the folder does not exist or holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: background folder not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{folder}: no background images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int, channels: int = 3) -> np.ndarray:
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    g = rng.uniform(-1.0, 1.0, (gh, gw, channels)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, channels)


def procedural_background(rng: np.random.Generator, width: int, height: int, clutter: int = 30) -> np.ndarray:
    """A random cluttered image.

    Args:
        rng: random generator (all randomness comes from it).
        width, height: size, pixels.
        clutter: number of random shapes drawn.

    Returns:
        (height, width, 3) uint8 RGB.
    """
    if width <= 0 or height <= 0:
        raise InputError(f"procedural_background: size must be positive, got {width}x{height}")
    h, w = int(height), int(width)
    grey = rng.uniform(40, 200)
    base = (grey + rng.uniform(0.0, 0.6) * (rng.uniform(30, 220, 3) - grey)).astype(np.float32)
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    # a linear gradient and noise at three scales
    gdir = rng.normal(size=2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (xx * gdir[0] + yy * gdir[1]) / max(h, w)
    img += ramp[..., None] * rng.uniform(-60, 60) * rng.uniform(0.7, 1.3, 3).astype(np.float32)
    for cell, amp in ((max(h, w) // 3, 40.0), (24, 20.0), (4, 10.0)):
        n = _smooth_noise(rng, h, w, max(cell, 2), 1) * 0.7 + _smooth_noise(rng, h, w, max(cell, 2)) * 0.3
        img += n * np.float32(rng.uniform(0.3, 1.0) * amp)
    def muted() -> tuple:  # photo-like colours: mostly desaturated, sometimes vivid
        grey = rng.uniform(20, 235)
        sat = rng.uniform(0.0, 1.0) ** 2
        return tuple(float(grey + sat * (c - grey)) for c in rng.uniform(0, 255, 3))

    for _ in range(int(clutter)):
        color = muted()
        kind = rng.integers(0, 4)
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        size = rng.uniform(0.03, 0.35) * max(h, w)
        if kind == 0:
            x0, y0 = int(cx - size / 2), int(cy - size * rng.uniform(0.2, 1.0) / 2)
            cv2.rectangle(img, (x0, y0), (int(cx + size / 2), int(cy + size / 3)), color, -1 if rng.random() < 0.7 else 2)
        elif kind == 1:
            axes = (max(1, int(size / 2)), max(1, int(size * rng.uniform(0.2, 1.0) / 2)))
            cv2.ellipse(img, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA)
        elif kind == 2:
            pts = (np.array([cx, cy]) + rng.normal(size=(int(rng.integers(3, 7)), 2)) * size / 2).astype(np.int32)
            cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
        else:
            p1 = (int(cx), int(cy))
            p2 = (int(cx + rng.normal() * size * 2), int(cy + rng.normal() * size * 2))
            cv2.line(img, p1, p2, color, int(rng.integers(1, 6)), cv2.LINE_AA)
        if rng.random() < 0.3:  # shapes carry some texture too
            img += _smooth_noise(rng, h, w, 6, 1) * np.float32(rng.uniform(2, 10))
    sigma = rng.uniform(0.0, 1.5)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


class BackgroundSource:
    """Random backgrounds: crops of photos, or procedural clutter.

    Args:
        folder: a folder of images, :data:`PACKAGE_PHOTOS_KEY` (``"photos"``: the packages'
            photographs), or None/'' for :func:`procedural_background`.
        max_cached: decoded images kept per instance (loading a photo costs more than cropping it).

    ``sample(rng, width, height)`` returns (height, width, 3) uint8 RGB.
    """

    def __init__(self, folder: str | os.PathLike | None = None, max_cached: int = 64):
        if folder is None or (isinstance(folder, str) and folder == ""):
            self.folder = None
        else:
            self.folder = folder if _is_package_photos(folder) else Path(folder)
        self.files = background_files(self.folder)
        if _is_package_photos(self.folder) and not self.files:
            _log.warning("backgrounds: %r, but none of scikit-image, matplotlib, scikit-learn ships its photos here: "
                         "procedural backgrounds instead (pip install scikit-image)", PACKAGE_PHOTOS_KEY)
        self.max_cached = int(max_cached)
        self._cache: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path) -> np.ndarray:
        img = self._cache.get(path)
        if img is None:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise InputError(f"{path}: cannot decode background image")
            img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if len(self._cache) >= self.max_cached:
                self._cache.pop(next(iter(self._cache)))
            self._cache[path] = img
        return img

    def sample(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        """A random background of the given size.

        A photo is cropped at a random position and scale (a window covering 40-100 % of the
        shorter side, at the output's aspect ratio), resized and flipped left-right half the time.
        """
        if not self.files:
            return procedural_background(rng, width, height)
        img = self._load(self.files[int(rng.integers(len(self.files)))])
        ih, iw = img.shape[:2]
        aspect = width / height
        ch = rng.uniform(0.4, 1.0) * min(ih, iw / aspect)
        cw = ch * aspect
        x0 = rng.uniform(0, max(iw - cw, 0))
        y0 = rng.uniform(0, max(ih - ch, 0))
        crop = img[int(y0):int(y0 + ch) or 1, int(x0):int(x0 + cw) or 1]
        interp = cv2.INTER_AREA if crop.shape[1] > width else cv2.INTER_LINEAR
        out = cv2.resize(crop, (int(width), int(height)), interpolation=interp)
        if rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)
