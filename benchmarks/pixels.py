"""Agents that see pixels: MinAtar Breakout speed (ours against SB3) and replay memory.

speed: our DQN and PPO (presets ``minatar-breakout-dqn`` / ``-ppo``) and Stable-Baselines3's
DQN with the same settings (the same network, built by ``lab.backbone`` and handed to SB3 as
its features extractor; centered RMSProp, buffer, schedule, target updates, Huber loss, no
gradient clipping) for a fixed number of frames each, one after the other in this process with
one torch thread. Reports frames per second of ``learn`` alone, the mean return of the last
100 training episodes and, with ``--eval-episodes N``, the greedy policy's mean return over N
fresh episodes (``agents.common.evaluate``, the same function for ours and SB3's). With the
default 50k frames this measures speed; ``--frames 1000000`` is the 1M-frame learning run.

memory: a 1M-transition ``FrameReplayBuffer`` of Atari observations (4, 84, 84) uint8,
allocated and filled with 1M transitions (episodes of 1,000 steps, non-zero frames), its
resident size (VmRSS growth) against the naive layout's computed size (obs and next_obs whole).

    python benchmarks/pixels.py                          # both, 50k frames per agent
    python benchmarks/pixels.py --only speed --frames 20000
    python benchmarks/pixels.py --only speed --frames 1000000 --eval-episodes 20
    python benchmarks/pixels.py --only memory --transitions 200000
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import torch

from agents import agent_configs
from agents.common import evaluate, seed_everything
from lab.commands import env_ids
from lab.runner import build_agent, with_horizon
from lab.spec import load_spec
from lab.tracking import ListLogger


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def last_mean(returns: list[float], n: int = 100) -> float:
    return float(np.mean(returns[-n:])) if returns else float("nan")


def with_eval(row: dict, model, env_spec, episodes: int) -> dict:
    if episodes:
        returns = evaluate(model, env_spec, episodes)
        row.update(eval_mean=float(np.mean(returns)), eval_std=float(np.std(returns)))
    return row


def ours(preset: str, frames: int, seed: int, episodes: int = 0) -> dict:
    spec = with_horizon(load_spec(preset, [f"train.steps={frames}", f"train.seed={seed}"],
                                  agent_configs(), env_ids()))
    seed_everything(seed)
    agent = build_agent(spec, "cpu")
    logger = ListLogger()
    start = time.perf_counter()
    agent.learn(frames, logger)
    wall = time.perf_counter() - start
    returns = [v for _, v in logger.series("train/episode_return")]
    return with_eval({"who": f"ours ({preset})", "frames": agent.num_timesteps, "wall_s": wall,
                      "fps": agent.num_timesteps / wall, "episodes": len(returns),
                      "last100": last_mean(returns)}, agent, spec.env, episodes)


def sb3_dqn(frames: int, seed: int, episodes: int = 0) -> dict:
    """SB3's DQN with minatar-breakout-dqn's settings and the same network."""
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    from lab.backbone import build_body

    spec = load_spec("minatar-breakout-dqn", [], agent_configs(), env_ids())
    cfg = spec.agent

    class Backbone(BaseFeaturesExtractor):
        def __init__(self, observation_space):
            body = build_body(cfg.network, observation_space.shape)
            super().__init__(observation_space, body.out_dim)
            self.body = body

        def forward(self, obs):
            return self.body(obs)

    env = Monitor(gym.make(spec.env.id))
    opt = cfg.optimizer
    model = DQN(
        "MlpPolicy", env, learning_rate=cfg.lr, buffer_size=cfg.buffer_size,
        learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, gamma=cfg.gamma,
        train_freq=cfg.train_freq, gradient_steps=cfg.gradient_steps,
        target_update_interval=cfg.target_update_interval, tau=cfg.tau,
        exploration_fraction=cfg.exploration_fraction,
        exploration_initial_eps=cfg.exploration_initial_eps,
        exploration_final_eps=cfg.exploration_final_eps,
        max_grad_norm=cfg.max_grad_norm or float("inf"), seed=seed, device="cpu",
        policy_kwargs={"features_extractor_class": Backbone, "net_arch": [],
                       "normalize_images": False, "optimizer_class": torch.optim.RMSprop,
                       "optimizer_kwargs": {"alpha": opt.alpha, "eps": opt.eps,
                                            "centered": opt.centered}})
    start = time.perf_counter()
    model.learn(frames)
    wall = time.perf_counter() - start
    returns = [float(r) for r in env.get_episode_rewards()]
    return with_eval({"who": "SB3 DQN (same settings)", "frames": model.num_timesteps,
                      "wall_s": wall, "fps": model.num_timesteps / wall,
                      "episodes": len(returns), "last100": last_mean(returns)},
                     model, spec.env, episodes)


def speed(frames: int, seed: int, episodes: int = 0) -> None:
    rows = []
    for run in (lambda: ours("minatar-breakout-dqn", frames, seed, episodes),
                lambda: sb3_dqn(frames, seed, episodes),
                lambda: ours("minatar-breakout-ppo", frames, seed, episodes)):
        rows.append(run())
        r = rows[-1]
        print(f"{r['who']}: {r['fps']:,.0f} frames/s, last-100 return {r['last100']:.2f}, "
              f"eval {r.get('eval_mean', float('nan')):.2f}", flush=True)
    print(f"\nMinAtar Breakout, {frames:,} frames each, seed {seed}, 1 torch thread\n")
    print("| agent | frames/s | wall s | episodes | mean return, last 100 | greedy eval |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ev = (f"{r['eval_mean']:.2f} ± {r['eval_std']:.2f}" if "eval_mean" in r else "-")
        print(f"| {r['who']} | {r['fps']:,.0f} | {r['wall_s']:.1f} | {r['episodes']} | "
              f"{r['last100']:.2f} | {ev} |")
    print(f"\nours / SB3 DQN frames/s: {rows[0]['fps'] / rows[1]['fps']:.2f}x")


def memory(transitions: int) -> None:
    from agents.frame_replay import FrameReplayBuffer

    shape, episode = (4, 84, 84), 1000
    rng = np.random.default_rng(0)
    pool = rng.integers(1, 256, (64, 84, 84), dtype=np.uint8)  # non-zero frames
    before = rss_bytes()
    buf = FrameReplayBuffer(transitions, shape, np.uint8)
    allocated = rss_bytes()
    obs = np.zeros((1, *shape), np.uint8)
    obs[0, -1] = pool[0]
    actions, rewards = np.zeros(1, np.int64), np.zeros(1, np.float32)
    no, valid = np.zeros(1, bool), np.ones(1, bool)
    start = time.perf_counter()
    for t in range(transitions):
        nxt = np.empty_like(obs)
        nxt[0, :-1] = obs[0, 1:]
        nxt[0, -1] = pool[(t + 1) % len(pool)]
        end = (t + 1) % episode == 0
        buf.add(obs, actions, rewards, nxt, no, np.array([end]), valid)
        if end:  # the next episode starts from zero padding
            nxt = np.zeros_like(obs)
            nxt[0, -1] = pool[t % len(pool)]
        obs = nxt
    fill_s = time.perf_counter() - start
    after = rss_bytes()
    frame = int(np.prod(shape[1:]))
    naive = transitions * (2 * shape[0] * frame + 8 + 4 + 4 + 4)  # obs, next_obs, fields
    print(f"\nFrame replay, {transitions:,} transitions of {shape} uint8 "
          f"({len(buf):,} held, {buf.frames_written:,} frames written, filled in {fill_s:.0f} s)")
    print(f"- preallocated: {buf.nbytes() / 1e9:.2f} GB "
          f"({buf.frame_capacity:,} frame slots of {frame:,} bytes + slots and fields)")
    print(f"- resident after filling: +{(after - before) / 1e9:.2f} GB "
          f"(+{(allocated - before) / 1e9:.2f} GB right after allocation; process "
          f"{after / 1e9:.2f} GB)")
    print(f"- naive layout (obs and next_obs whole): {naive / 1e9:.2f} GB computed, "
          f"{naive / max(after - before, 1):.1f}x the frame store")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["speed", "memory"], default=None)
    p.add_argument("--frames", type=int, default=50_000)
    p.add_argument("--transitions", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=0,
                   help="greedy evaluation episodes after each agent's training (0: none)")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"python {sys.version.split()[0]}")
    if args.only in (None, "memory"):
        memory(args.transitions)
    if args.only in (None, "speed"):
        speed(args.frames, args.seed, args.eval_episodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
