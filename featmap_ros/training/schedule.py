"""The learning-rate schedule of every training loop here (f, g, h; the localiser; the
hand-centre refiner): cosine decay from ``lr`` to ``lr * min_frac`` over ``total`` steps."""
from __future__ import annotations

import math


def cosine_lr(lr: float, step: int, total: int, min_frac: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based) of ``total``; ``lr`` at 0, ``lr * min_frac`` at ``total``."""
    frac = step / max(total, 1)
    return lr * (min_frac + (1.0 - min_frac) * 0.5 * (1.0 + math.cos(math.pi * frac)))
