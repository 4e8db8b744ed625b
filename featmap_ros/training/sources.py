"""Batch sources: deterministic functions of (seed, stream, step), so a resumed run draws the
batches the uninterrupted run would have drawn."""
from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np
import torch

from featmap_ros.errors import InputError


class BatchSource(Protocol):
    """Deterministic batches: ``batch(step, n)`` gives the same tensors for the same step."""

    def batch(self, step: int, n: int) -> dict[str, torch.Tensor]: ...


def stream_seed(seed: int, stream: int, step: int) -> int:
    """A 63-bit seed for (run seed, stream id, step), stable across processes and resumes."""
    return int(np.random.SeedSequence([seed, stream, step]).generate_state(2, dtype=np.uint32).astype(np.uint64).dot([1, 2**32]) % (2**63 - 1))


class TensorSource:
    """Batches sampled (with replacement) from in-memory tensors of equal first dimension.

    Args:
        tensors: name -> (N, ...) tensor (e.g. ``image`` (N, 3, S, S), ``target`` (N, K, 2)).
        seed: run seed.
        stream: stream id (distinct streams draw independent indices).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], seed: int, stream: int) -> None:
        sizes = {k: v.shape[0] for k, v in tensors.items()}
        if len(set(sizes.values())) != 1 or 0 in sizes.values():
            raise InputError(f"training source: tensors must share a non-zero first dimension, got {sizes}")
        self.tensors = tensors
        self.seed, self.stream = seed, stream
        self.size = next(iter(sizes.values()))

    def batch(self, step: int, n: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(stream_seed(self.seed, self.stream, step))
        idx = torch.randint(0, self.size, (n,), generator=g)
        return {k: v[idx] for k, v in self.tensors.items()}


class IterableSource:
    """Batches from an online IterableDataset (rendered in DataLoader workers).

    ``make_dataset(seed)`` must return a dataset that yields dicts of tensors; the source
    rebuilds it with a seed derived from the step it resumes at, so a resumed run renders
    fresh (not repeated) samples. Exactness across resumes holds for :class:`TensorSource` only.
    """

    def __init__(self, make_dataset: Callable[[int], Any], seed: int, stream: int, num_workers: int, batch_size: int) -> None:
        self.make_dataset, self.seed, self.stream = make_dataset, seed, stream
        self.num_workers, self.batch_size = num_workers, batch_size
        self._it = None
        self._next_step = -1

    def batch(self, step: int, n: int) -> dict[str, torch.Tensor]:
        if self._it is None or step != self._next_step:
            ds = self.make_dataset(stream_seed(self.seed, self.stream, step))
            loader = torch.utils.data.DataLoader(ds, batch_size=n, num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
            self._it = iter(loader)
        self._next_step = step + 1
        return next(self._it)


def as_float(t: torch.Tensor) -> torch.Tensor:
    """Cached crops to float32: uint8 colour -> [0, 1]; float16 depth -> float32."""
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    return t.float()


class CachedSource:
    """:class:`featmap_ros.train.TensorSource` over a cache that stores crops compactly."""

    def __init__(self, tensors: dict[str, torch.Tensor], seed: int, stream: int) -> None:

        self.inner = TensorSource(tensors, seed, stream)

    def batch(self, step: int, n: int) -> dict[str, torch.Tensor]:
        b = self.inner.batch(step, n)
        return {k: as_float(v) if k in ("image", "depth", "real", "synth", "coords_n", "mask_visib") else v for k, v in b.items()}
