"""Tracking: the logger interface agents see, and (for the runner) the mlflow side.

Agents only ever see ``Logger.log(metrics, step)``; they never import mlflow.
"""

from __future__ import annotations

from typing import Protocol


class Logger(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...


class ListLogger:
    """A logger that keeps every (step, metrics) pair in a list: for tests and evaluation."""

    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.records.append((int(step), dict(metrics)))

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(s, m[key]) for s, m in self.records if key in m]
