"""Atomic checkpoints (model + optimizer + RNG + counters) and the non-finite-loss guard.

A checkpoint is one torch file written to a temp name in the same folder and renamed over the
old one, so a reader sees the previous complete file or the new complete file, never a torn
one, whatever moment the writer is killed at. Loading uses ``weights_only=True``.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf: the run must stop and keep its last good checkpoint."""

    def __init__(self, name: str, value: float, step: int):
        super().__init__(f"non-finite loss {name}={value} at step {step}")
        self.name, self.value, self.step = name, value, step


def check_finite(losses: Mapping[str, float], step: int) -> None:
    """Raise NonFiniteLossError naming the first loss that is NaN or inf."""
    for name, value in losses.items():
        if not math.isfinite(value):
            raise NonFiniteLossError(name, value, step)


def rng_state() -> dict[str, Any]:
    """The global RNG states of python, numpy and torch, as checkpoint-safe values."""
    np_state = np.random.get_state()
    return {
        "python": repr(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    import ast

    random.setstate(_tuplify(ast.literal_eval(state["python"])))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
         n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])


def generator_state(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy Generator's state, checkpoint-safe: PCG64's 128-bit integers do not fit a
    tensor or a weights_only pickle of ints, so they are kept as strings."""
    s = rng.bit_generator.state
    return {"bit_generator": s["bit_generator"], "state": str(s["state"]["state"]),
            "inc": str(s["state"]["inc"]), "has_uint32": int(s["has_uint32"]),
            "uinteger": int(s["uinteger"])}


def set_generator_state(rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    rng.bit_generator.state = {
        "bit_generator": state["bit_generator"],
        "state": {"state": int(state["state"]), "inc": int(state["inc"])},
        "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_atomic(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` with torch.save to ``path`` through a temp file + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by save_atomic; refuses pickled code (weights_only=True)."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


class Checkpointer:
    """Saves an agent's state every ``every`` env steps into ``folder/checkpoint.pt``.

    Agents call ``maybe_save(step, agent.state_dict)`` inside their loop; the state function is
    only called when a save is due. ``before_save`` (set by the runner) flushes buffered
    metrics first, so the store is never behind the checkpoint.
    """

    def __init__(self, folder: str | Path, every: int,
                 before_save: Callable[[], None] | None = None):
        self.folder = Path(folder)
        self.every = int(every)
        self.before_save = before_save
        self.last_step = -1

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT_NAME

    def due(self, step: int) -> bool:
        return self.every > 0 and step // self.every > max(self.last_step, 0) // self.every

    def maybe_save(self, step: int, state_fn: Callable[[], dict]) -> bool:
        if not self.due(step):
            return False
        self.save(step, state_fn())
        return True

    def save(self, step: int, state: dict) -> Path:
        if self.before_save is not None:
            self.before_save()
        full = {"agent": state, "rng": rng_state(), "step": int(step)}
        save_atomic(full, self.path)
        self.last_step = step
        return self.path

    def load(self, map_location: str | torch.device = "cpu") -> dict | None:
        if not self.path.exists():
            return None
        ckpt = load(self.path, map_location)
        self.last_step = int(ckpt["step"])
        return ckpt
