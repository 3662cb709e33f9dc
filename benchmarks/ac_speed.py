"""Quick speed probe: our A2C / PPO against SB3's at the same hyperparameters, same process.

    python benchmarks/ac_speed.py                 # both algos, 20k steps each, 1 torch thread
    python benchmarks/ac_speed.py --algo ppo --steps 50000 --repeats 3

Prints env steps per second of each side and the ratio (ours / SB3). Both use CartPole-v1 with
8 envs (ours: the numpy-vectorized CartPole; SB3: its DummyVecEnv), the preset hyperparameters
of cartpole-ppo / cartpole-a2c, and the same seed. The runs alternate (ours, SB3, ours, ...)
so that load from other processes hits both alike; the best of ``--repeats`` is kept.
This is a probe, not the benchmark: no evaluation, no mlflow.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch


def sb3_model(algo: str, agent_cfg, env_id: str, n_envs: int, seed: int):
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    c = agent_cfg
    lr = (lambda p: p * c.lr) if c.lr_schedule == "linear" else c.lr
    common = dict(learning_rate=lr, n_steps=c.n_steps, gamma=c.gamma, gae_lambda=c.gae_lambda,
                  ent_coef=c.ent_coef, vf_coef=c.vf_coef, max_grad_norm=c.max_grad_norm,
                  normalize_advantage=c.normalize_advantage, device="cpu", seed=seed)
    if algo == "ppo":
        clip = (lambda p: p * c.clip_range) if c.clip_range_schedule == "linear" else c.clip_range
        return PPO("MlpPolicy", env, batch_size=c.batch_size, n_epochs=c.n_epochs,
                   clip_range=clip, **common)
    return A2C("MlpPolicy", env, rms_prop_eps=c.optimizer.eps, **common)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=["ppo", "a2c", "both"], default="both")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    from agents import agent_class, agent_configs
    from lab.spec import load_spec
    from lab.tracking import ListLogger

    for algo in (["ppo", "a2c"] if args.algo == "both" else [args.algo]):
        spec = load_spec(f"cartpole-{algo}", [], agent_configs())
        ours, theirs = [], []
        for _ in range(args.repeats):
            agent = agent_class(algo)(spec.agent, spec.env, seed=args.seed)
            t = time.perf_counter()
            agent.learn(args.steps, ListLogger())
            ours.append(agent.num_timesteps / (time.perf_counter() - t))
            model = sb3_model(algo, spec.agent, spec.env.id, spec.env.num_envs, args.seed)
            t = time.perf_counter()
            model.learn(args.steps)
            theirs.append(model.num_timesteps / (time.perf_counter() - t))
        best_ours, best_sb3 = max(ours), max(theirs)
        runs = f"ours {', '.join(f'{x:,.0f}' for x in ours)}; SB3 " + \
            ", ".join(f"{x:,.0f}" for x in theirs)
        print(f"{algo}: ours {best_ours:,.0f} steps/s, SB3 {best_sb3:,.0f} steps/s, "
              f"ratio {best_ours / best_sb3:.2f}x  (runs: {runs})")


if __name__ == "__main__":
    main()
