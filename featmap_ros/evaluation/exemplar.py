"""The exemplar-based baseline (the paper's predecessor): nearest neighbours in feature space.

Synthetic exemplars with known poses are described by f; a real image's feature is matched
to its nearest exemplar features and the pose is read off (the mean of the k nearest
exemplars' pose numbers). Feature Mapping replaces this lookup by regression through g and h,
so its cost does not grow with the number of exemplars; ``featmap bench exemplar`` measures both.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from featmap_ros.errors import InputError


@dataclass
class ExemplarIndex:
    """Exemplar features and their pose numbers.

    Attributes:
        features: (N, D) float32 exemplar features.
        targets: (N, ...) float32 pose numbers of each exemplar (corners_n (8, 2) or joints_n (J, 3)).
    """

    features: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        if self.features.dim() != 2 or self.features.shape[0] == 0:
            raise InputError(f"exemplar features: expected (N, D) with N > 0, got {tuple(self.features.shape)}")
        if self.targets.shape[0] != self.features.shape[0]:
            raise InputError(f"exemplar targets: {self.targets.shape[0]} rows for {self.features.shape[0]} features")

    def nearest(self, queries: torch.Tensor, k: int = 1, chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
        """k nearest exemplars of each query (Euclidean), exact, chunked over exemplars.

        Args:
            queries: (B, D) float32.
            k: neighbours per query.
            chunk: exemplars per distance block (bounds memory).

        Returns:
            (distances (B, k) float32, indices (B, k) int64).
        """
        if queries.dim() != 2 or queries.shape[1] != self.features.shape[1]:
            raise InputError(f"queries: expected (B, {self.features.shape[1]}), got {tuple(queries.shape)}")
        k = min(k, self.features.shape[0])
        q = queries.float()
        best_d = torch.full((q.shape[0], 0), float("inf"))
        best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
        for start in range(0, self.features.shape[0], chunk):
            block = self.features[start:start + chunk].float()
            d = torch.cdist(q, block)
            dk, ik = torch.topk(d, min(k, block.shape[0]), dim=1, largest=False)
            best_d = torch.cat([best_d, dk], dim=1)
            best_i = torch.cat([best_i, ik + start], dim=1)
            best_d, order = torch.topk(best_d, min(k, best_d.shape[1]), dim=1, largest=False)
            best_i = torch.gather(best_i, 1, order)
        return best_d, best_i

    def predict(self, queries: torch.Tensor, k: int = 1) -> torch.Tensor:
        """Pose numbers of the queries: mean over the k nearest exemplars. (B, ...) float32."""
        _, idx = self.nearest(queries, k)
        return self.targets[idx].float().mean(dim=1)


@torch.no_grad()
def extract_features(f: torch.nn.Module, images: torch.Tensor, batch: int = 256, flatten: bool = True) -> torch.Tensor:
    """f over (N, C, S, S) crops in batches (module put in eval mode by the caller): (N, D)
    float32 vectors, conv-level features (``map_level: conv``) flattened unless ``flatten`` is False."""
    out = [f(images[i:i + batch]).float() for i in range(0, images.shape[0], batch)]
    if not out:
        return torch.zeros(0)
    feats = torch.cat(out)
    return feats.flatten(1) if flatten else feats
