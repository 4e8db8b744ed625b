"""How an object window is written into and read out of the heatmap localiser's grid.

One home for both directions: training turns each object's window into a centre heatmap, a
size and a sub-cell offset (:func:`heatmap_targets`); the estimator turns the network's output
back into windows (:func:`decode_heatmap`). The grid is the network's stride-8 output over the
resized frame; a window is :class:`featmap_ros.crops.Window` in full-frame pixels (the square the
pose network crops: centre and side of 1.1 x the projected 3D box, ``crops.object_window``).

The compact per-frame target (what caches store) is ``(n_objects, 4)``: window centre u, v as
fractions of the frame's width and height, log(window side / frame width), present 0/1 (one
instance per object and frame, as in LM-O).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from featmap_ros.crops import Window

#: Gaussian of a centre: sigma = max(MIN_SIGMA_CELLS, window side in cells * SIGMA_PER_SIDE).
SIGMA_PER_SIDE = 1.0 / 6.0
MIN_SIGMA_CELLS = 0.8
#: A peak is a detection above this probability when the objects' counts are not given.
PRESENCE_THRESHOLD = 0.5
#: At most this many windows per object and frame without counts.
MAX_PER_OBJECT = 4


def heatmap_targets(target: torch.Tensor, grid_h: int, grid_w: int) -> dict[str, torch.Tensor]:
    """Dense training targets of a batch.

    Args:
        target: (B, n, 4) compact targets (module docstring).
        grid_h, grid_w: the output grid (input size / stride).

    Returns:
        ``heat`` (B, n, grid_h, grid_w) in [0, 1], exactly 1 at each present object's centre
        cell; ``index`` (B, n) long flat index of that cell; ``offset`` (B, n, 2) the centre's
        offset from the cell's middle, in cells (x, y); ``log_side`` (B, n); ``present`` (B, n).
    """
    target = target.float()
    u = target[..., 0] * grid_w
    v = target[..., 1] * grid_h
    cx = u.floor().clamp(0, grid_w - 1)
    cy = v.floor().clamp(0, grid_h - 1)
    present = target[..., 3]
    side_cells = target[..., 2].exp() * grid_w
    sigma = (side_cells * SIGMA_PER_SIDE).clamp(min=MIN_SIGMA_CELLS)
    xs = torch.arange(grid_w, dtype=torch.float32).view(1, 1, 1, grid_w)
    ys = torch.arange(grid_h, dtype=torch.float32).view(1, 1, grid_h, 1)
    d2 = (xs - cx[..., None, None]) ** 2 + (ys - cy[..., None, None]) ** 2
    heat = torch.exp(-d2 / (2 * sigma[..., None, None] ** 2)) * present[..., None, None]
    return {"heat": heat, "index": (cy * grid_w + cx).long(), "offset": torch.stack([u - cx - 0.5, v - cy - 0.5], -1),
            "log_side": target[..., 2], "present": present}


def heatmap_loss(out: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """CenterNet's loss: focal loss on the heat, L1 on size and offset at the centre cells.

    Args:
        out: (B, 2 n + 2, gh, gw) network output.
        target: (B, n, 4) compact targets.

    Returns:
        ``{"loss", "heat", "size", "offset"}`` scalars (``loss`` = their sum).
    """
    B, C, gh, gw = out.shape
    n = (C - 2) // 2
    t = heatmap_targets(target.to("cpu"), gh, gw)
    t = {k: v.to(out.device) for k, v in t.items()}
    p = torch.sigmoid(out[:, :n].float()).clamp(1e-4, 1 - 1e-4)
    pos = (t["heat"] >= 1.0 - 1e-6) & (t["present"][..., None, None] > 0)
    n_pos = pos.sum().clamp(min=1)
    pos_loss = -(torch.log(p) * (1 - p) ** 2)[pos].sum()
    neg_loss = -(torch.log(1 - p) * p ** 2 * (1 - t["heat"]) ** 4)[~pos].sum()
    heat = (pos_loss + neg_loss) / n_pos
    present = t["present"]
    idx = t["index"]
    flat_side = out[:, n:2 * n].float().flatten(2)                     # (B, n, gh*gw)
    side = flat_side.gather(2, idx[..., None])[..., 0]                  # (B, n)
    flat_off = out[:, 2 * n:].float().flatten(2)                        # (B, 2, gh*gw)
    off = torch.stack([flat_off[:, j].gather(1, idx) for j in range(2)], -1)  # (B, n, 2)
    denom = present.sum().clamp(min=1)
    size = ((side - t["log_side"]).abs() * present).sum() / denom
    offset = ((off - t["offset"]).abs().sum(-1) * present).sum() / denom
    return {"loss": heat + size + offset, "heat": heat, "size": size, "offset": offset}


def decode_heatmap(out: torch.Tensor, frame_w: int, frame_h: int, counts: dict[int, int] | None = None,
                   threshold: float = PRESENCE_THRESHOLD) -> list[tuple[int, Window, float]]:
    """Windows from one frame's output.

    Args:
        out: (2 n + 2, gh, gw) network output for one frame.
        frame_w, frame_h: size of the full frame, pixels (windows are in its pixels).
        counts: object index -> how many instances to return (the highest peaks, whatever their
            probability: BOP's protocol gives each image's objects and instance counts); None =
            every peak above ``threshold``, at most :data:`MAX_PER_OBJECT` per object.

    Returns:
        [(object index, window, peak probability)], per object highest first.
    """
    C, gh, gw = out.shape
    n = (C - 2) // 2
    heat = torch.sigmoid(out[:n].float())
    peaks = heat * (F.max_pool2d(heat[None], 3, stride=1, padding=1)[0] == heat)
    log_side = out[n:2 * n].float()
    off = out[2 * n:].float()
    found = []
    for k in range(n):
        want = (counts or {}).get(k, 0) if counts is not None else MAX_PER_OBJECT
        if want <= 0:
            continue
        score, idx = peaks[k].flatten().topk(min(want, gh * gw))
        for s, i in zip(score.tolist(), idx.tolist()):
            if counts is None and s < threshold:
                break
            cy, cx = divmod(i, gw)
            u = (cx + 0.5 + float(off[0, cy, cx])) / gw * frame_w
            v = (cy + 0.5 + float(off[1, cy, cx])) / gh * frame_h
            side = float(np.exp(float(log_side[k, cy, cx]))) * frame_w
            found.append((k, Window(float(u), float(v), side), float(s)))
    return found
