"""Image batches -> one grid picture (PNG): for sample grids in runs and ``lab sample``."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2,
               min_cell: int = 28) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> a uint8 grid (rows x cols cells, ``padding`` grey pixels
    between): (H', W') for one channel, (H', W', 3) for three. Cells smaller than
    ``min_cell`` pixels are scaled up by an integer factor (nearest), so 8x8 digits show."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    scale = max(1, math.ceil(min_cell / max(h, w)))
    x = (images.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    x = x.repeat(scale, axis=2).repeat(scale, axis=3)
    h, w = h * scale, w * scale
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), 128,
                   dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Write ``image_grid(images)`` as a PNG, atomically (temp file + rename)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(image_grid(images, nrow)).save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
