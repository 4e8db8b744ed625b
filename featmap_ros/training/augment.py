"""Photometric augmentation of training crops (``augment: none | photometric | strong | simreal``).

- ``photometric``: brightness, contrast, colour cast, light noise.
- ``strong``: twice those ranges, saturation, a 3x3 blur on half the crops.
- ``simreal``: what sim-to-real pipelines add for photographs (domain randomisation): strong's
  colour changes, then a Gaussian blur (sigma 0.3-1.5 px) on 60 % of the crops, per-pixel noise
  of sigma up to 0.06 (three times ``strong``'s), and JPEG re-compression at quality
  :data:`JPEG_QUALITY` on 70 % of the crops, as a camera stream delivers. A new level rather than
  a change to ``strong``, so that configs using ``strong`` keep their behaviour.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from featmap_ros.errors import InputError

LEVELS = ("none", "photometric", "strong", "simreal")
#: JPEG re-compression quality range of ``simreal`` (inclusive).
JPEG_QUALITY = (30, 90)
#: Gaussian blur sigma range of ``simreal``, pixels.
BLUR_SIGMA_PX = (0.3, 1.5)


def jpeg_recompress(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode an image as JPEG and decode it again.

    Args:
        rgb: (H, W, 3) uint8 RGB image.
        quality: JPEG quality, 1-100.

    Returns:
        (H, W, 3) uint8 new image with the compression's block and ringing artefacts.
    """
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"jpeg_recompress: expected (H, W, 3) uint8, got {img.shape} {img.dtype}")
    if not 1 <= int(quality) <= 100:
        raise InputError(f"jpeg_recompress: quality must be in 1..100, got {quality}")
    # OpenCV's encoder takes BGR: its luma/chroma split must see the channels in that order
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 images
        raise RuntimeError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def _gaussian_blur(y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    # separable Gaussian, one sigma per crop: (B, C, S, S), sigma (B,)
    B, C = y.shape[:2]
    r = int(np.ceil(3 * BLUR_SIGMA_PX[1]))
    x = torch.arange(-r, r + 1, dtype=y.dtype, device=y.device)
    k = torch.exp(-0.5 * (x[None, :] / sigma[:, None].to(y)) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # (B, 2r+1)
    w = k.repeat_interleave(C, dim=0)  # (B*C, 2r+1), one kernel per channel of each crop
    z = y.reshape(1, B * C, *y.shape[2:])
    z = torch.nn.functional.pad(z, (r, r, r, r), mode="replicate")
    z = torch.nn.functional.conv2d(z, w[:, None, None, :], groups=B * C)
    z = torch.nn.functional.conv2d(z, w[:, None, :, None], groups=B * C)
    return z.reshape(y.shape)


def photometric_augment(x: torch.Tensor, generator: torch.Generator, strength: str) -> torch.Tensor:
    """Random brightness, contrast, colour cast, blur, noise (and JPEG) on colour crops in [0, 1].

    Args:
        x: (B, 3, S, S) float32 in [0, 1] (depth crops (B, 1, S, S) get noise and offset only;
            ``simreal`` treats them as ``strong``).
        generator: CPU generator (seeded per step); all randomness comes from it.
        strength: one of :data:`LEVELS`.

    Returns:
        A new tensor, same shape; the input is not modified.
    """
    if strength not in LEVELS:
        raise InputError(f"augment: unknown level {strength!r}; valid: {', '.join(LEVELS)}")
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
    if strength == "simreal":
        return _simreal_tail(y, generator, U)
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


def _simreal_tail(y: torch.Tensor, generator: torch.Generator, U) -> torch.Tensor:
    # after the shared colour changes: saturation, blur, noise, JPEG (the order of a camera)
    B, C = y.shape[:2]
    dev = y.device
    grey = y.mean(dim=1, keepdim=True)
    y = grey + (y - grey) * U(0.3, 1.3, B, 1, 1, 1)
    blur = torch.rand(B, generator=generator) < 0.6
    sigma = U(*BLUR_SIGMA_PX, B)
    if blur.any():
        y = torch.where(blur.to(dev).view(B, 1, 1, 1), _gaussian_blur(y, sigma), y)
    noise = torch.randn(y.shape, generator=generator).to(dev) * U(0, 0.06, B, 1, 1, 1)
    y = (y + noise).clamp(0, 1)
    jpeg = (torch.rand(B, generator=generator) < 0.7).tolist()
    quality = torch.randint(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, (B,), generator=generator).tolist()
    if any(jpeg):
        u8 = (y.detach().cpu() * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        out = y.clone()
        for i in range(B):
            if jpeg[i]:
                out[i] = torch.from_numpy(jpeg_recompress(u8[i], quality[i])).permute(2, 0, 1).to(y) / 255.0
        y = out
    return y.clamp(0, 1)
