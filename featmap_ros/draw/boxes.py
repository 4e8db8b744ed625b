"""Overlays of object poses: projected 3D bounding boxes, silhouette outlines, labels, and zoomed
insets (a strip of per-object zooms below a frame, :func:`with_zoom_strip`), since a 60-px object
can't be judged on a full 640 x 480 frame.

Every function returns a new image and leaves its input untouched. Images are (H, W, 3) uint8
RGB; points are pixels with centres at integer coordinates (as :mod:`featmap_ros.geometry`).
"""
from __future__ import annotations

import colorsys
from typing import Sequence

import cv2
import numpy as np

from featmap_ros import crops, geometry
from featmap_ros.crops import Window
from featmap_ros.errors import InputError

#: Side of a zoom tile, pixels (four fit across a 640-px frame with their gaps), and the window
#: around an object's projected box (x its extent).
ZOOM_TILE_PX = 150
ZOOM_WINDOW_SCALE = 1.5

_SHIFT = 4  # sub-pixel bits for cv2 drawing


def color_for(obj_id: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per object id (golden-ratio hues)."""
    h = (int(obj_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"image: expected (H, W, 3) uint8, got {img.shape} {img.dtype}")
    return img.copy()


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * (1 << _SHIFT))), int(round(p[1] * (1 << _SHIFT)))


def draw_box(image: np.ndarray, corners_px: np.ndarray, color=(0, 255, 0), thickness: int = 1) -> np.ndarray:
    """Draw the 12 edges of a projected 3D box.

    Args:
        image: (H, W, 3) uint8 RGB.
        corners_px: (8, 2) projected corners in :data:`geometry.BOX_CORNER_SIGNS` order, pixels.
        color: RGB.
        thickness: line width, pixels.

    Returns:
        (H, W, 3) uint8 new image. Edges with a non-finite end (behind the camera) are skipped.
    """
    out = _check_image(image)
    c = np.asarray(corners_px, dtype=np.float64).reshape(8, 2)
    for a, b in geometry.BOX_EDGES:
        if np.all(np.isfinite(c[[a, b]])) and np.all(np.abs(c[[a, b]]) < 1e5):
            cv2.line(out, _pt(c[a]), _pt(c[b]), tuple(int(x) for x in color), thickness, cv2.LINE_AA, _SHIFT)
    return out


def draw_outline(image: np.ndarray, mask: np.ndarray, color=(255, 255, 0), thickness: int = 1, fill_alpha: float = 0.0) -> np.ndarray:
    """Draw the outline of a silhouette, optionally tinting its inside.

    Args:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) bool silhouette.
        color: RGB.
        thickness: line width, pixels.
        fill_alpha: opacity of the tint inside the mask (0 = outline only).
    """
    out = _check_image(image)
    m = np.asarray(mask, dtype=bool)
    if m.shape != out.shape[:2]:
        raise InputError(f"mask: shape {m.shape} differs from image {out.shape[:2]}")
    if fill_alpha > 0:
        tint = np.asarray(color, np.float32)
        out[m] = np.clip((1 - fill_alpha) * out[m].astype(np.float32) + fill_alpha * tint + 0.5, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, tuple(int(x) for x in color), thickness, cv2.LINE_AA)
    return out


def draw_label(image: np.ndarray, text: str, at_px, color=(255, 255, 255)) -> np.ndarray:
    """Write ``text`` with a dark backing box whose top-left corner is ``at_px`` (clamped inside)."""
    out = _check_image(image)
    font, scale, th = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    (tw, th), base = cv2.getTextSize(text, font, scale, th)
    x = int(np.clip(at_px[0], 0, max(out.shape[1] - tw - 2, 0)))
    y = int(np.clip(at_px[1], 0, max(out.shape[0] - th - base - 2, 0)))
    cv2.rectangle(out, (x, y), (x + tw + 2, y + th + base + 2), (0, 0, 0), -1)
    cv2.putText(out, text, (x + 1, y + th + 1), font, scale, tuple(int(c) for c in color), th, cv2.LINE_AA)
    return out


def draw_pose(
    image: np.ndarray,
    corners_m: np.ndarray,
    R_m2c: np.ndarray,
    t_m2c_m: np.ndarray,
    K: np.ndarray,
    color=(0, 255, 0),
    mask: np.ndarray | None = None,
    label: str | None = None,
    thickness: int = 1,
) -> np.ndarray:
    """Overlay one object pose: silhouette outline (if a mask is given), projected box, label.

    Args:
        image: (H, W, 3) uint8 RGB.
        corners_m: (8, 3) model-frame box corners, metres.
        R_m2c: (3, 3) rotation; t_m2c_m: (3,) translation, metres.
        K: (3, 3) intrinsics of ``image``.
        color: RGB.
        mask: (H, W) bool rendered silhouette or None.
        label: text drawn next to the box, or None.
    """
    out = np.asarray(image)
    if mask is not None:
        out = draw_outline(out, mask, color, thickness, fill_alpha=0.25)
    uv = geometry.project_model_points(corners_m, R_m2c, t_m2c_m, K)
    out = draw_box(out, uv, color, thickness)
    if label:
        fin = uv[np.all(np.isfinite(uv), axis=1)]
        if len(fin):
            out = draw_label(out, label, (fin[:, 0].min(), fin[:, 1].min() - 14), color)
    return out


def zoom_window(corners_px: np.ndarray, scale: float = ZOOM_WINDOW_SCALE) -> Window:
    """Square window around an object's projected box corners (8, 2), pixels, for its zoom tile."""
    return crops.window_from_points(corners_px, scale=scale, min_side=16.0)


def zoom_tile(
    image: np.ndarray,
    K: np.ndarray,
    window: Window,
    poses: Sequence[tuple],
    label: str | None = None,
    size: int = ZOOM_TILE_PX,
    thickness: int = 1,
) -> np.ndarray:
    """A zoomed crop of ``image`` with poses drawn at the zoom's resolution (crisp lines).

    Args:
        image: (H, W, 3) uint8 RGB frame, without overlays.
        K: (3, 3) intrinsics of ``image``.
        window: the zoomed window, full-image pixels (:func:`zoom_window`).
        poses: ``(corners_m (8, 3) metres, R_m2c (3, 3), t_m2c_m (3,) metres, RGB colour)`` each.
        label: text in the tile's top-left corner (e.g. the object's name), or None.
        size: tile side, pixels.
        thickness: line width in the tile, pixels.

    Returns:
        (size, size, 3) uint8 new image.
    """
    img = _check_image(image)
    if size < 16:
        raise InputError(f"zoom_tile: size must be >= 16 px, got {size}")
    tile = crops.crop_image(img, window, int(size))
    K_tile = np.vstack([window.affine_to_crop(int(size)), [0.0, 0.0, 1.0]]) @ geometry.check_K(K)
    for corners_m, R_m2c, t_m2c_m, color in poses:
        tile = draw_pose(tile, corners_m, R_m2c, t_m2c_m, K_tile, color=color, thickness=thickness)
    if label:
        tile = draw_label(tile, label, (2, 2))
    return tile


def with_zoom_strip(frame: np.ndarray, tiles: Sequence[np.ndarray], gap: int = 4, fill=(32, 32, 32)) -> np.ndarray:
    """``frame`` with ``tiles`` laid out in rows below it (as many per row as the width holds).

    Args:
        frame: (H, W, 3) uint8 RGB.
        tiles: (s, s, 3) uint8 tiles of one size (:func:`zoom_tile`); none returns a copy of ``frame``.
        gap: pixels between tiles and around the strip.
        fill: RGB of the strip's background.

    Returns:
        (H + rows * (s + gap) + gap, W', 3) uint8 new image, W' = max(W, one tile and its gaps).
    """
    out = _check_image(frame)
    if not len(tiles):
        return out
    tiles = [np.asarray(t) for t in tiles]
    s = tiles[0].shape[0]
    for t in tiles:
        if t.shape != (s, s, 3) or t.dtype != np.uint8:
            raise InputError(f"with_zoom_strip: tiles must all be ({s}, {s}, 3) uint8, got {t.shape} {t.dtype}")
    h, w = out.shape[:2]
    width = max(w, s + 2 * gap)
    per_row = max(1, (width - gap) // (s + gap))
    rows = -(-len(tiles) // per_row)
    sheet = np.empty((h + rows * (s + gap) + gap, width, 3), np.uint8)
    sheet[:] = np.asarray(fill, np.uint8)
    sheet[:h, :w] = out
    for i, t in enumerate(tiles):
        r, c = divmod(i, per_row)
        y, x = h + gap + r * (s + gap), gap + c * (s + gap)
        sheet[y:y + s, x:x + s] = t
    return sheet
