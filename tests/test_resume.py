"""A real `lab train` subprocess killed with SIGKILL resumes with `--resume` and finishes, and
its metric history has no duplicated steps."""

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from lab.checkpoint import load
from lab.tracking import Tracker

STEPS = 40_000


def lab(*argv, cwd):
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    return subprocess.Popen([sys.executable, "-m", "lab", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkilled_run_resumes_without_duplicated_steps(store, tmp_path):
    proc = lab("train", "cartpole-ppo", f"train.steps={STEPS}", "train.checkpoint_every=2048",
               "train.eval_every=8192", "train.eval_episodes=2", "train.gif=false",
               "--no-progress", "--tracking-uri", store, cwd=tmp_path)
    ckpt_root = tmp_path / "runs" / "checkpoints"
    deadline = time.monotonic() + 120
    ckpts: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        ckpts = list(ckpt_root.glob("*/checkpoint.pt"))
        if ckpts and load(ckpts[0])["step"] >= 6000:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read()
    proc.kill()
    proc.wait()
    killed_at = load(ckpts[0])["step"]
    assert killed_at < STEPS

    run_id = ckpts[0].parent.name
    tracker = Tracker(store)
    assert tracker.client.get_run(run_id).info.status == "RUNNING"

    resumed = lab("train", "--resume", run_id, "--no-progress", "--tracking-uri", store,
                  cwd=tmp_path)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert f"resumed run {run_id} from step {killed_at}" in out

    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in run.data.metrics:
        steps = [m.step for m in tracker.client.get_metric_history(run_id, key)]
        duplicated = [s for s, n in Counter(steps).items() if n > 1]
        assert not duplicated, f"{key} has duplicated steps {duplicated[:5]}"
    returns = tracker.client.get_metric_history(run_id, "train/episode_return")
    assert max(m.step for m in returns) > killed_at
    assert load(ckpts[0])["step"] >= STEPS
