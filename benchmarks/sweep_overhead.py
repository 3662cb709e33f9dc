"""What Ray Tune adds to a sweep: N ``cartpole-ppo`` trials through ``lab sweep``'s machinery
against the same N run one after another in one process, in one run.

    python benchmarks/sweep_overhead.py                 # 8 trials, the preset's 1e5 steps
    python benchmarks/sweep_overhead.py --steps 20000   # shorter trials

Legs, each into its own fresh SQLite store in a temporary folder (seeds 0..N-1, one torch
thread per trial, evaluation and GIF as the preset says):
  sequential  ``lab.runner.train`` N times in this process (torch and mlflow imported once)
  ray         ``lab.sweep.run_sweep``: a local Ray with --cpus CPUs, --concurrent trials at once,
              each trial in a Ray worker with a private store, the driver copying the runs
  ray-serial  the same with one trial at a time (--no-serial to skip): the per-trial overhead
              without the parallel speed-up
Ray's start is timed on its own and included in the Ray legs' wall time.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path


def sequential(preset: str, overrides: list[str], n: int, uri: str) -> float:
    from agents import agent_configs
    from lab import runner
    from lab.commands import env_ids
    from lab.spec import load_spec
    from lab.tracking import Tracker

    spec = load_spec(preset, overrides, agent_configs(), env_ids())
    t0 = time.perf_counter()
    for seed in range(n):
        one = spec.model_copy(update={"train": spec.train.model_copy(update={"seed": seed})})
        runner.train(one, tracker=Tracker(uri, "bench-sequential"), device="cpu",
                     group="bench-sequential", show_progress=False)
    return time.perf_counter() - t0


def through_ray(preset: str, overrides: list[str], n: int, uri: str, concurrent: int,
                name: str) -> float:
    from lab import sweep

    args = argparse.Namespace(
        preset=preset, overrides=overrides, grid=None, seeds=f"0-{n - 1}", search=None,
        trials=None, metric="eval/return_mean", mode="max", name=name, resume=None,
        address=None, max_concurrent=concurrent, device="cpu", tracking_uri=uri,
        experiment="bench-ray")
    plan = sweep.make_plan(args)
    t0 = time.perf_counter()
    report = sweep.run_sweep(plan, max_concurrent=concurrent, print_fn=lambda *a: None)
    wall = time.perf_counter() - t0
    bad = [r for r in report.rows if r["status"] != "FINISHED"]
    if len(report.rows) != n or bad:
        sys.exit(f"{name}: {len(report.rows)} trials, {len(bad)} not FINISHED: {bad[:1]}")
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cartpole-ppo")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="train.steps (default: the preset's)")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument("--no-serial", action="store_true", help="skip the one-at-a-time Ray leg")
    args = p.parse_args()
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    overrides = [f"train.steps={args.steps}"] if args.steps else []

    import ray

    from lab import sweep_ray

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        uri = f"sqlite:///{Path(tmp) / 'runs' / 'mlflow.db'}"
        from lab.tracking import Tracker

        Tracker(uri, "bench-sequential")  # the store's migrations, outside every leg
        Tracker(uri, "bench-ray")
        sweep_ray._ensure_template()
        print(f"{args.trials} x {args.preset} {' '.join(overrides) or '(preset steps)'}, "
              f"{args.cpus} CPUs for Ray, {args.concurrent} trials at once; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        seq = sequential(args.preset, overrides, args.trials, uri)
        print(f"sequential, one process : {seq:7.1f} s", flush=True)
        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
        start = time.perf_counter() - t0
        print(f"Ray start               : {start:7.1f} s", flush=True)
        par = start + through_ray(args.preset, overrides, args.trials, uri, args.concurrent,
                                  "bench-par")
        print(f"Ray, {args.concurrent} at once          : {par:7.1f} s (Ray start included)",
              flush=True)
        ser = None
        if not args.no_serial:
            ser = start + through_ray(args.preset, overrides, args.trials, uri, 1, "bench-ser")
            print(f"Ray, 1 at once          : {ser:7.1f} s (Ray start included)", flush=True)
        ray.shutdown()
        os.chdir("/")
    print(f"ratio Ray {args.concurrent} at once / sequential: {par / seq:.2f} "
          f"(speed-up {seq / par:.2f}x; ideal on {args.concurrent} free cores "
          f"{1 / args.concurrent:.2f})")
    if ser is not None:
        print(f"ratio Ray 1 at once / sequential: {ser / seq:.2f} "
              f"(overhead {(ser - seq) / args.trials:+.1f} s per trial)")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
