"""Tracking: the logger interface agents see, and the mlflow side the runner uses.

Agents only ever see ``Logger.log(metrics, step)``; they never import mlflow. The runner opens a
run with ``Tracker``, hands its ``MlflowLogger`` to the agent, and logs params, tags, artifacts.

Store: ``sqlite:///runs/mlflow.db`` (under the working directory) with artifacts under
``runs/artifacts/``, unless ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` names another store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

RUNS_DIR = Path("runs")
DEFAULT_EXPERIMENT = "lab"
MAX_BATCH = 1000  # mlflow's log_batch limit on metrics per call
MAX_PARAMS = 100  # ... and on params per call


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


def tracking_uri(uri: str | None = None) -> str:
    """The store to use: the argument, else $MLFLOW_TRACKING_URI, else runs/mlflow.db."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(RUNS_DIR / 'mlflow.db').resolve()}"


def _is_local_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:///")


class MlflowLogger:
    """Buffers metrics and sends them with ``log_batch``: at 1000 values, every few seconds, and
    on ``flush``. ``skip`` maps a metric key to the last step already in the store (set on
    resume), so steps replayed after a checkpoint are not logged twice."""

    def __init__(self, client, run_id: str, skip: Mapping[str, int] | None = None,
                 flush_every_s: float = 5.0):
        self.client, self.run_id = client, run_id
        self.skip = dict(skip or {})
        self.flush_every_s = flush_every_s
        self._buffer: list = []
        self._last_flush = time.monotonic()

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(step)
        for key, value in metrics.items():
            if step <= self.skip.get(key, -1):
                continue
            self._buffer.append(Metric(key, float(value), now, step))
        overdue = time.monotonic() - self._last_flush > self.flush_every_s
        if len(self._buffer) >= MAX_BATCH or overdue:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[:MAX_BATCH], self._buffer[MAX_BATCH:]
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
        self._last_flush = time.monotonic()


class Tracker:
    """One mlflow store + experiment. ``start`` or ``resume`` a run, then ``logger``,
    ``log_artifact``, ``finish``."""

    def __init__(self, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT):
        from mlflow import MlflowClient

        self.uri = tracking_uri(uri)
        if _is_local_sqlite(self.uri):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_id = self._experiment(experiment)
        self.run_id: str | None = None
        self.logger: MlflowLogger | None = None

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if _is_local_sqlite(self.uri):
            root = Path(self.uri.removeprefix("sqlite:///")).parent
            location = (root / "artifacts" / name).resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # created meanwhile by another process
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def start(self, params: Mapping[str, Any], tags: Mapping[str, str],
              run_name: str | None = None) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, tags=dict(tags), run_name=run_name)
        self.run_id = run.info.run_id
        items = [Param(k, _param_text(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS], synchronous=True)
        self.logger = MlflowLogger(self.client, self.run_id)
        return self.run_id

    def resume(self, run_id: str) -> str:
        """Reopen ``run_id``: mark it running and skip metric steps already stored."""
        run = self.client.get_run(run_id)
        self.run_id = run.info.run_id
        skip = {}
        for key in run.data.metrics:
            history = self.client.get_metric_history(run_id, key)
            skip[key] = max((m.step for m in history), default=-1)
        self.client.update_run(run_id, status="RUNNING")
        self.logger = MlflowLogger(self.client, run_id, skip=skip)
        return run_id

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.logger is not None:
            self.logger.flush()
        self.client.set_terminated(self.run_id, status=status)


def _param_text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def find_run(client, run_id: str):
    """The run with this id (a unique prefix of at least 6 characters also works)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        pass
    if len(run_id) >= 6:
        exps = [e.experiment_id for e in client.search_experiments()]
        matches = [r for r in _all_runs(client, exps) if r.info.run_id.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
    return None


def _all_runs(client, experiment_ids: Iterable[str], filter_string: str = ""):
    token = None
    while True:
        page = client.search_runs(list(experiment_ids), filter_string=filter_string,
                                  max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return
