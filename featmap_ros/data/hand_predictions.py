"""Reader of the published hand-pose format (awesome-hand-pose-estimation ``evaluation/``).

One frame per line, J joints x (u, v, d) separated by whitespace: u, v in pixels, d in mm.
Ground truth and predictions share the format; the dataset's intrinsics turn them into 3D.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from featmap_ros.data.specs import HandDatasetSpec
from featmap_ros.errors import InputError, read_text
from featmap_ros.geometry import uvd_to_xyz


def read_uvd_file(path: str | Path, num_joints: int | None = None) -> np.ndarray:
    """Read a published (u, v, d) file.

    Blank lines at the end of the file are ignored; a blank line before the last frame is an
    error (it would shift every following frame).

    Args:
        path: the text file.
        num_joints: J expected per line; None takes it from the first line.

    Returns:
        (N, J, 3) float64: u, v in pixels, d in mm.

    Raises:
        InputError: missing file, no frames, a line with a wrong number of columns, a value
            that is not a number, NaN or inf; the message names the file and the line.
    """
    p = Path(path)
    text = read_text(p)
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise InputError(f"{p}: no frames (empty file)")
    if num_joints is None:
        first = lines[0].split()
        if len(first) % 3:
            raise InputError(f"{p}:1: {len(first)} columns, not a multiple of 3 (u v d per joint)")
        expected = len(first)
    else:
        expected = 3 * int(num_joints)
    frames = np.empty((len(lines), expected), dtype=np.float64)
    for i, line in enumerate(lines):
        where = f"{p}:{i + 1}"
        tokens = line.split()
        if not tokens:
            raise InputError(f"{where}: empty line (frame {i + 1} missing)")
        if len(tokens) != expected:
            raise InputError(f"{where}: {len(tokens)} columns, expected {expected} ({expected // 3} joints x u v d)")
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            bad = next(t for t in tokens if not _is_float(t))
            raise InputError(f"{where}: column {tokens.index(bad) + 1} is not a number: {bad!r}") from None
        for j, v in enumerate(values):
            if not math.isfinite(v):
                raise InputError(f"{where}: column {j + 1} (joint {j // 3}, {'uvd'[j % 3]}) is {tokens[j]}")
        frames[i] = values
    return frames.reshape(len(lines), expected // 3, 3)


def _is_float(t: str) -> bool:
    try:
        float(t)
    except ValueError:
        return False
    return True


def read_pred_gt(pred_path: str | Path, gt_path: str | Path, spec: HandDatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read a prediction file and its ground truth and check that they correspond.

    Args:
        pred_path: predictions, published format.
        gt_path: ground truth, published format.
        spec: the dataset (its joint count is enforced on both files).

    Returns:
        (pred_uvd, gt_uvd), each (N, J, 3) float64.

    Raises:
        InputError: as :func:`read_uvd_file`, or different frame counts (naming both files
            and the first missing line).
    """
    J = len(spec.joint_names)
    gt = read_uvd_file(gt_path, J)
    pred = read_uvd_file(pred_path, J)
    if pred.shape[0] != gt.shape[0]:
        short, long_ = (pred_path, gt_path) if pred.shape[0] < gt.shape[0] else (gt_path, pred_path)
        n_short = min(pred.shape[0], gt.shape[0])
        raise InputError(
            f"{pred_path} has {pred.shape[0]} frames but {gt_path} has {gt.shape[0]}: "
            f"{short} ends at line {n_short}, {long_} goes on to line {max(pred.shape[0], gt.shape[0])} "
            "(one frame per line, in the same order)"
        )
    return pred, gt


def uvd_to_xyz_mm(uvd: np.ndarray, spec: HandDatasetSpec) -> np.ndarray:
    """(N, J, 3) u, v, d (mm) -> (N, J, 3) x, y, z in mm with the dataset's intrinsics and
    y convention (NYU: y up)."""
    return uvd_to_xyz(uvd, spec.fx, spec.fy, spec.cx, spec.cy, y_up=spec.y_up)
