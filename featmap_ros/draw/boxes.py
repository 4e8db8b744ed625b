"""Overlays of object poses: projected 3D bounding boxes, silhouette outlines and labels.

Every function returns a new image and leaves its input untouched. Images are (H, W, 3) uint8
RGB; points are pixels with centres at integer coordinates (as :mod:`featmap_ros.geometry`).
"""
from __future__ import annotations

import colorsys

import cv2
import numpy as np

from featmap_ros import geometry
from featmap_ros.errors import InputError

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
