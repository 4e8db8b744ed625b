"""Photometric augmentation of training crops (``augment: none | photometric | strong``)."""
from __future__ import annotations

import torch


def photometric_augment(x: torch.Tensor, generator: torch.Generator, strength: str) -> torch.Tensor:
    """Random brightness, contrast, colour cast, blur and noise on colour crops in [0, 1].

    Args:
        x: (B, 3, S, S) float32 in [0, 1] (depth crops (B, 1, S, S) get noise and offset only).
        generator: CPU generator (seeded per step).
        strength: ``photometric`` or ``strong``.

    Returns:
        A new tensor, same shape; the input is not modified.
    """
    if strength == "none":
        return x
    B, C = x.shape[:2]
    k = 1.0 if strength == "photometric" else 2.0

    def U(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator) * (hi - lo) + lo).to(x.device)

    if C == 1:  # depth: a small global offset and sensor-like noise, stays in [-1, 1]
        y = x + U(-0.05, 0.05, B, 1, 1, 1) * k
        y = y + torch.randn(x.shape, generator=generator).to(x.device) * 0.01 * k
        return y.clamp(-1, 1)
    y = x * U(1 - 0.3 * k, 1 + 0.3 * k, B, 1, 1, 1)  # brightness
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * U(1 - 0.3 * k, 1 + 0.3 * k, B, 1, 1, 1) + mean  # contrast
    y = y * U(1 - 0.1 * k, 1 + 0.1 * k, B, C, 1, 1)  # colour cast
    if strength == "strong":
        grey = y.mean(dim=1, keepdim=True)
        sat = U(0.3, 1.3, B, 1, 1, 1)
        y = grey + (y - grey) * sat
        blur = torch.rand(B, generator=generator) < 0.5
        if blur.any():
            kernel = torch.tensor([1.0, 2.0, 1.0], device=x.device)
            kernel = (kernel[:, None] * kernel[None, :] / 16.0).expand(C, 1, 3, 3)
            blurred = torch.nn.functional.conv2d(y, kernel, padding=1, groups=C)
            y = torch.where(blur.to(x.device).view(B, 1, 1, 1), blurred, y)
    y = y + torch.randn(x.shape, generator=generator).to(x.device) * (0.02 * k) * U(0, 1, B, 1, 1, 1)
    return y.clamp(0, 1)
