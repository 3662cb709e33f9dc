"""mlflow runs -> a comparison table per (agent, env) and a learning-curve plot.

``collect`` reads finished training runs of an experiment (optionally one ``group``) and
summarises them over seeds with 95% percentile-bootstrap intervals (lab/stats.py): the final
metric's mean and interquartile mean, the median steps to the threshold over the seeds that
reached it; the curves are drawn as the mean over seeds with a bootstrap band.
``log_comparison`` logs the table and the plot as artifacts of a new run tagged
``lab.kind=compare`` (such runs are never compared themselves). Tables print as text,
markdown or CSV.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.stats import bootstrap_band, bootstrap_ci, iqm
from lab.tracking import _all_runs

KIND_TAG = "lab.kind"


@dataclass
class Row:
    agent: str
    env: str
    seeds: int
    final_mean: float
    final_std: float
    reached: int  # seeds whose moving-average curve metric reached the threshold
    steps_to_threshold: float | None  # median over the seeds that reached it
    wall_s: float
    steps_per_sec: float
    final_ci: tuple[float, float] = (math.nan, math.nan)  # 95% bootstrap CI of the mean
    final_iqm: float = math.nan
    iqm_ci: tuple[float, float] = (math.nan, math.nan)
    steps_ci: tuple[float, float] | None = None  # of the median steps to threshold

    def cells(self) -> list[str]:
        if self.steps_to_threshold is None:
            stt = "-"
        else:
            lo, hi = self.steps_ci or (self.steps_to_threshold, self.steps_to_threshold)
            stt = f"{self.steps_to_threshold:,.0f} [{lo:,.0f}, {hi:,.0f}]"
        return [self.agent, self.env, str(self.seeds),
                f"{self.final_mean:.1f} [{self.final_ci[0]:.1f}, {self.final_ci[1]:.1f}]",
                f"{self.final_iqm:.1f} [{self.iqm_ci[0]:.1f}, {self.iqm_ci[1]:.1f}]",
                f"{stt} ({self.reached}/{self.seeds})", f"{self.wall_s:.1f}",
                f"{self.steps_per_sec:,.0f}"]

    def record(self) -> dict:
        """The row as plain numbers (for CSV)."""
        stt_lo, stt_hi = self.steps_ci or (math.nan, math.nan)
        return {"agent": self.agent, "env": self.env, "seeds": self.seeds,
                "final_mean": self.final_mean, "final_mean_low95": self.final_ci[0],
                "final_mean_high95": self.final_ci[1], "final_std": self.final_std,
                "final_iqm": self.final_iqm, "final_iqm_low95": self.iqm_ci[0],
                "final_iqm_high95": self.iqm_ci[1], "reached": self.reached,
                "steps_to_threshold": (math.nan if self.steps_to_threshold is None
                                       else self.steps_to_threshold),
                "steps_low95": stt_lo, "steps_high95": stt_hi, "wall_s": self.wall_s,
                "steps_per_sec": self.steps_per_sec}


HEADER = ["agent", "env", "seeds", "final mean [95% CI]", "final IQM [95% CI]",
          "steps to threshold: median [95% CI]", "wall s", "steps/s"]


SOLVED_WINDOW = 20  # episodes in the moving average that must reach the threshold


def first_step_reaching(history: list[tuple[int, float]], threshold: float,
                        window: int = 1) -> int | None:
    """The first step at which the mean of the last ``window`` values is >= threshold (the
    Gym "solved" rule, e.g. CartPole-v1: 475 averaged over consecutive episodes), or None."""
    values: list[float] = []
    for step, value in sorted(history):
        values.append(value)
        if len(values) >= window and sum(values[-window:]) / window >= threshold:
            return step
    return None


def mean_and_spread(curves: list[list[tuple[int, float]]], points: int = 100,
                    band: str = "minmax"):
    """Curves resampled (step-wise, last value carried forward) on a shared step grid:
    returns (grid, mean, low, high); the grid stops at the shortest curve's last step.
    ``band``: "minmax" over seeds, or "bootstrap" (95% interval of the mean over seeds)."""
    curves = [sorted(c) for c in curves if c]
    if not curves:
        return np.array([]), np.array([]), np.array([]), np.array([])
    end = min(c[-1][0] for c in curves)
    start = max(c[0][0] for c in curves)
    grid = np.linspace(start, end, points) if end > start else np.array([float(end)])
    rows = []
    for c in curves:
        steps = np.array([s for s, _ in c], dtype=float)
        values = np.array([v for _, v in c], dtype=float)
        idx = np.searchsorted(steps, grid, side="right") - 1
        rows.append(values[np.clip(idx, 0, len(values) - 1)])
    data = np.stack(rows)
    if band == "bootstrap":
        return (grid, *bootstrap_band(data))
    return grid, data.mean(0), data.min(0), data.max(0)


def default_threshold(env_id: str) -> float | None:
    import gymnasium as gym

    import envs  # noqa: F401

    try:
        return gym.spec(env_id).reward_threshold
    except gym.error.Error:
        return None


def collect(client, experiment_id: str, group: str | None, metric: str,
            curve_metric: str, threshold: float | None):
    """(rows, curves): one Row per (agent, env) and their curves, from finished runs."""
    filt = "attributes.status = 'FINISHED'"
    if group:
        filt += f" and tags.group = '{group}'"
    runs = [r for r in _all_runs(client, [experiment_id], filt)
            if r.data.tags.get(KIND_TAG) != "compare"]
    by_key = defaultdict(list)
    for run in runs:
        by_key[(run.data.tags.get("agent", "?"), run.data.tags.get("env", "?"))].append(run)
    rows, curves = [], {}
    for (agent, env), group_runs in sorted(by_key.items()):
        thr = threshold if threshold is not None else default_threshold(env)
        finals, reach_steps, walls, speeds, group_curves = [], [], [], [], []
        for run in group_runs:
            history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                            metric)]
            if history:
                finals.append(max(history)[1])  # the value at the last step
            curve = [(m.step, m.value) for m in
                     client.get_metric_history(run.info.run_id, curve_metric)]
            if thr is not None:
                reached = first_step_reaching(curve, thr, SOLVED_WINDOW)
                if reached is not None:
                    reach_steps.append(reached)
            if run.info.end_time and run.info.start_time:
                walls.append((run.info.end_time - run.info.start_time) / 1000.0)
            speed = run.data.metrics.get("time/steps_per_sec")
            if speed is not None:
                speeds.append(speed)
            group_curves.append(curve)
        mean, lo, hi = bootstrap_ci(finals)
        iq, iq_lo, iq_hi = bootstrap_ci(finals, iqm)
        stt, stt_lo, stt_hi = bootstrap_ci(reach_steps, np.median)
        rows.append(Row(
            agent=agent, env=env, seeds=len(group_runs),
            final_mean=mean, final_std=float(np.std(finals)) if finals else math.nan,
            reached=len(reach_steps),
            steps_to_threshold=stt if reach_steps else None,
            wall_s=float(np.mean(walls)) if walls else math.nan,
            steps_per_sec=float(np.median(speeds)) if speeds else math.nan,
            final_ci=(lo, hi), final_iqm=iq, iqm_ci=(iq_lo, iq_hi),
            steps_ci=(stt_lo, stt_hi) if reach_steps else None,
        ))
        curves[(agent, env)] = group_curves
    return rows, curves


def plot_curves(curves: dict, metric: str, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for (agent, env), group_curves in curves.items():
        grid, mean, low, high = mean_and_spread(group_curves, band="bootstrap")
        if grid.size == 0:
            continue
        line, = ax.plot(grid, mean, label=f"{agent} / {env} ({len(group_curves)} seeds)")
        ax.fill_between(grid, low, high, alpha=0.2, color=line.get_color())
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    ax.set_title("mean over seeds with a 95% bootstrap band")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[Row]) -> str:
    out = io.StringIO()
    records = [r.record() for r in rows]
    writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else ["agent"])
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def log_comparison(tracker, rows: list[Row], curves: dict, metric: str, curve_metric: str,
                   group: str | None) -> str:
    """A run tagged lab.kind=compare holding the table (markdown) and the curve PNG."""
    run_id = tracker.start(params={"metric": metric, "curve_metric": curve_metric,
                                   "group": group or "*"},
                           tags={KIND_TAG: "compare", "group": group or "*"},
                           run_name=f"compare-{group or 'all'}")
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "comparison.md"
        table.write_text(markdown_table(rows))
        tracker.log_artifact(table)
        if curves:
            tracker.log_artifact(plot_curves(curves, curve_metric, Path(tmp) / "curves.png"))
    tracker.finish("FINISHED")
    return run_id
