"""Our DQN / PPO / A2C against Stable-Baselines3 at the same (rl-zoo3) hyperparameters.

For each algorithm and seed it trains ours (preset ``cartpole-ALGO``) and SB3's (preset
``cartpole-sb3-ALGO``, identical settings) one after the other in this process with one torch
thread, times ``learn`` alone (steps / wall seconds), then evaluates each deterministically over
20 episodes. Ours and SB3 alternate seed by seed, so machine noise hits both alike.

    python benchmarks/rl_vs_sb3.py                       # all: DQN 50k, PPO 100k, A2C 100k, 5 seeds
    python benchmarks/rl_vs_sb3.py --algos ppo --seeds 0-1 --json out.json

Prints a markdown table: median steps/s of ours and SB3 and their ratio, final eval mean ± std
over seeds, and the seeds reaching >= 475.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch

from agents import agent_configs
from agents.common import evaluate, seed_everything
from lab.commands import env_ids
from lab.runner import build_agent, with_horizon
from lab.spec import load_spec, parse_seeds
from lab.tracking import ListLogger

SOLVED = 475.0


def one_run(preset: str, seed: int, steps: int | None, eval_episodes: int) -> dict:
    overrides = [f"train.seed={seed}"] + ([f"train.steps={steps}"] if steps else [])
    spec = with_horizon(load_spec(preset, overrides, agent_configs(), env_ids()))
    seed_everything(seed)
    agent = build_agent(spec, "cpu")
    start = time.perf_counter()
    agent.learn(spec.train.steps, ListLogger())
    wall = time.perf_counter() - start
    returns = evaluate(agent, spec.env, eval_episodes, seed=10_000 + 100 * seed)
    return {"preset": preset, "seed": seed, "steps": agent.num_timesteps, "wall_s": wall,
            "steps_per_sec": agent.num_timesteps / wall, "eval_mean": float(np.mean(returns)),
            "eval_std": float(np.std(returns))}


def summary(rows: list[dict]) -> dict:
    finals = [r["eval_mean"] for r in rows]
    return {"median_sps": statistics.median(r["steps_per_sec"] for r in rows),
            "eval_mean": float(np.mean(finals)), "eval_std": float(np.std(finals)),
            "solved": sum(f >= SOLVED for f in finals), "seeds": len(rows)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algos", default="dqn,ppo,a2c")
    p.add_argument("--seeds", default="0-4")
    p.add_argument("--steps", type=int, default=None, help="override the presets' budgets")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--json", default=None, help="also write every run's numbers here")
    args = p.parse_args()
    torch.set_num_threads(1)
    seeds = parse_seeds(args.seeds)
    results: dict[str, dict[str, list[dict]]] = {}
    for algo in args.algos.split(","):
        results[algo] = {"ours": [], "sb3": []}
        for seed in seeds:
            for who, preset in (("ours", f"cartpole-{algo}"), ("sb3", f"cartpole-sb3-{algo}")):
                row = one_run(preset, seed, args.steps, args.eval_episodes)
                results[algo][who].append(row)
                print(f"{algo:4s} {who:4s} seed {seed}: {row['steps_per_sec']:8,.0f} steps/s, "
                      f"eval {row['eval_mean']:6.1f} ± {row['eval_std']:5.1f}", flush=True)

    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"1 torch thread, python {sys.version.split()[0]}\n")
    print("| algo | ours steps/s | SB3 steps/s | ratio | ours eval | SB3 eval "
          "| ours >= 475 | SB3 >= 475 |")
    print("|---|---|---|---|---|---|---|---|")
    for algo, by in results.items():
        o, s = summary(by["ours"]), summary(by["sb3"])
        print(f"| {algo} | {o['median_sps']:,.0f} | {s['median_sps']:,.0f} "
              f"| {o['median_sps'] / s['median_sps']:.2f}x "
              f"| {o['eval_mean']:.1f} ± {o['eval_std']:.1f} "
              f"| {s['eval_mean']:.1f} ± {s['eval_std']:.1f} "
              f"| {o['solved']}/{o['seeds']} | {s['solved']}/{s['seeds']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
