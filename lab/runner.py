"""One experiment end to end: spec -> agent -> mlflow run -> checkpoints -> eval -> artifacts.

This is the top layer (it wires ``agents`` to the shared machinery); ``lab/cli.py`` only parses
arguments and calls into here.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

import lab
from lab.checkpoint import Checkpointer, NonFiniteLossError, set_rng_state
from lab.spec import Spec, flatten, validate_spec
from lab.tracking import RUNS_DIR, Tracker

CHECKPOINT_TAG = "lab.checkpoint_dir"


class RunError(RuntimeError):
    """A run could not go on; the message is the one line the user sees."""


@dataclass
class RunResult:
    run_id: str
    status: str
    eval_mean: float | None = None
    eval_std: float | None = None
    steps: int = 0
    wall_s: float = 0.0
    learn_s: float = 0.0  # time inside agent.learn only (no evaluation, GIF, artifacts)

    @property
    def steps_per_sec(self) -> float:
        return self.steps / self.learn_s if self.learn_s > 0 else float("nan")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(lab.__file__).parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def with_horizon(spec: Spec) -> Spec:
    """Fill ``agent.total_timesteps`` (the run length that schedules such as epsilon or a
    linear learning rate refer to) from ``train.steps`` when the spec leaves it unset, so
    ``train.steps=20000`` alone shortens the schedules too."""
    if "total_timesteps" in type(spec.agent).model_fields and spec.agent.total_timesteps is None:
        agent = spec.agent.model_copy(update={"total_timesteps": spec.train.steps})
        return spec.model_copy(update={"agent": agent})
    return spec


def build_agent(spec: Spec, device: str = "cpu"):
    from agents import agent_class

    cls = agent_class(spec.agent.algo)
    return cls(spec.agent, spec.env, device=device, seed=spec.train.seed)


def spec_from_run(client, run_id: str) -> Spec:
    """The validated spec a run was started with (its ``spec.yaml`` artifact)."""
    from agents import agent_configs

    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "spec.yaml", tmp)
        raw = yaml.safe_load(Path(path).read_text())
    return validate_spec(raw, agent_configs())


def load_agent(client, run, device: str = "cpu"):
    """Rebuild a run's agent from its spec and its last checkpoint (local, else the artifact)."""
    from lab import checkpoint

    spec = spec_from_run(client, run.info.run_id)
    agent = build_agent(spec, device)
    local = Path(run.data.tags.get(CHECKPOINT_TAG, "")) / checkpoint.CHECKPOINT_NAME
    with tempfile.TemporaryDirectory() as tmp:
        if not local.is_file():
            try:
                artifact = f"checkpoint/{checkpoint.CHECKPOINT_NAME}"
                local = Path(client.download_artifacts(run.info.run_id, artifact, tmp))
            except Exception:
                raise RunError(f"run {run.info.run_id} has no checkpoint yet") from None
        ckpt = checkpoint.load(local, map_location=device)
    agent.load_state_dict(ckpt["agent"])
    return spec, agent


def train(spec: Spec, *, tracker: Tracker, device: str = "auto", group: str | None = None,
          resume_run_id: str | None = None, show_progress: bool = True,
          print_fn=print) -> RunResult:
    """Train ``spec`` into a new mlflow run (or continue ``resume_run_id``)."""
    import torch

    from agents.common import evaluate, resolve_device, seed_everything

    dev = resolve_device(device)
    spec = with_horizon(spec)
    if spec.train.torch_threads:
        torch.set_num_threads(spec.train.torch_threads)
    seed_everything(spec.train.seed)
    agent = build_agent(spec, str(dev))  # before the run exists: a bad combination writes nothing

    if resume_run_id is None:
        run_id = tracker.start(
            params=flatten(spec.to_dict()),
            tags={
                "agent": spec.agent.algo, "env": spec.env.id, "seed": str(spec.train.seed),
                "group": group or spec.name, "device": str(dev), "git_commit": git_commit(),
                "lab_version": lab.__version__, "preset": spec.name,
            },
            run_name=f"{spec.name}-s{spec.train.seed}",
        )
        ckpt_dir = (RUNS_DIR / "checkpoints" / run_id).resolve()
        tracker.set_tags({CHECKPOINT_TAG: str(ckpt_dir)})
        with tempfile.TemporaryDirectory() as tmp:
            spec_path = Path(tmp) / "spec.yaml"
            spec_path.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
            tracker.log_artifact(spec_path)
    else:
        run_id = tracker.resume(resume_run_id)
        ckpt_dir = Path(tracker.client.get_run(run_id).data.tags[CHECKPOINT_TAG])

    logger = tracker.logger
    checkpointer = Checkpointer(ckpt_dir, spec.train.checkpoint_every, before_save=logger.flush)
    checkpointer.include_replay = spec.train.save_replay
    if resume_run_id is not None:
        ckpt = checkpointer.load(map_location=dev)
        if ckpt is not None:
            agent.load_state_dict(ckpt["agent"])
            set_rng_state(ckpt["rng"])
            print_fn(f"resumed run {run_id} from step {ckpt['step']}")
        else:
            print_fn(f"run {run_id} had no checkpoint yet: starting it again from step 0")

    total = spec.train.steps
    every = spec.train.eval_every or total
    start = time.monotonic()
    first_step = agent.num_timesteps
    result = RunResult(run_id, "RUNNING")
    try:
        with _progress(total, spec.name, show_progress) as progress:
            progress(agent.num_timesteps, None)
            while agent.num_timesteps < total:
                target = min(total, (agent.num_timesteps // every + 1) * every)
                t0 = time.monotonic()
                agent.learn(target, logger, checkpointer, progress)
                result.learn_s += time.monotonic() - t0
                if spec.train.eval_episodes and agent.num_timesteps < total:
                    _log_eval(evaluate(agent, spec.env, spec.train.eval_episodes), agent, logger)
        if spec.train.eval_episodes:
            returns = evaluate(agent, spec.env, spec.train.eval_episodes)
            _log_eval(returns, agent, logger)
            result.eval_mean, result.eval_std = float(np.mean(returns)), float(np.std(returns))
        checkpointer.save(agent.num_timesteps, _agent_state(agent, checkpointer))
        tracker.log_artifact(checkpointer.path, "checkpoint")
        if spec.train.gif:
            from lab.render import record_episode, write_video

            frames, fps = record_episode(agent, spec.env, spec.train.gif_max_frames,
                                         seed=spec.train.seed)
            gif = write_video(frames, ckpt_dir / "eval.gif", fps)
            tracker.log_artifact(gif)
    except NonFiniteLossError as e:
        logger.flush()
        tracker.finish("FAILED")
        kept = (f"last good checkpoint (step {checkpointer.last_step}) kept at {checkpointer.path}"
                if checkpointer.last_step >= 0 else "no checkpoint had been written yet")
        raise RunError(f"run {run_id} stopped: {e}; run marked FAILED; {kept}") from None
    except KeyboardInterrupt:
        tracker.finish("KILLED")
        raise
    tracker.finish("FINISHED")
    result.status, result.steps = "FINISHED", agent.num_timesteps - first_step
    result.wall_s = time.monotonic() - start
    return result


def _agent_state(agent, checkpointer) -> dict:
    if getattr(checkpointer, "include_replay", False):
        try:
            return agent.state_dict(include_replay=True)
        except TypeError:
            pass
    return agent.state_dict()


def _log_eval(returns: list[float], agent, logger) -> None:
    logger.log({"eval/return_mean": float(np.mean(returns)),
                "eval/return_std": float(np.std(returns))}, step=agent.num_timesteps)


class SpeedColumn(ProgressColumn):
    def render(self, task):
        return Text(f"{task.speed or 0:>7.0f} steps/s")


class _progress:
    """A rich progress bar (steps, steps/s, latest episode return, ETA) as a callback."""

    def __init__(self, total: int, title: str, enabled: bool):
        self.total, self.title, self.enabled = total, title, enabled
        self._bar = None
        self._last_return: float | None = None

    def __enter__(self):
        if self.enabled:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                SpeedColumn(),
                TextColumn("return {task.fields[ret]}"), TimeRemainingColumn(),
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=self.total, ret="-")
        return self

    def __call__(self, step: int, last_return: float | None) -> None:
        if last_return is not None:
            self._last_return = last_return
        if self._bar is not None:
            ret = "-" if self._last_return is None else f"{self._last_return:.1f}"
            self._bar.update(self._task, completed=min(step, self.total), ret=ret)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False

