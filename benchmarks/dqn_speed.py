"""Quick side-by-side speed probe: our DQN vs SB3's DQN at the same hyperparameters.

    python benchmarks/dqn_speed.py --steps 20000 --preset cartpole-dqn [--eval 20]

Both learn ``--steps`` transitions on one torch thread from the same preset (SB3 gets the
preset's settings translated to its own arguments), alternating so that background load hits
both alike. Prints steps/s of each (wall clock, and per CPU second of the process, which
background load on a shared machine disturbs less), the ratios, and (with --eval) the
deterministic evaluation mean over that many episodes. The full benchmark (5 seeds at 50k
steps) lives elsewhere.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def sb3_dqn(spec, seed: int):
    from stable_baselines3 import DQN as SB3DQN
    from stable_baselines3.common.env_util import make_vec_env

    a = spec.agent
    env = make_vec_env(spec.env.id, n_envs=spec.env.num_envs, seed=seed)
    activation = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[a.network.activation]
    return SB3DQN(
        "MlpPolicy", env, learning_rate=a.lr, buffer_size=a.buffer_size,
        learning_starts=a.learning_starts, batch_size=a.batch_size, tau=a.tau, gamma=a.gamma,
        train_freq=a.train_freq, gradient_steps=a.gradient_steps,
        target_update_interval=a.target_update_interval,
        exploration_fraction=a.exploration_fraction,
        exploration_initial_eps=a.exploration_initial_eps,
        exploration_final_eps=a.exploration_final_eps, max_grad_norm=a.max_grad_norm,
        policy_kwargs=dict(net_arch=list(a.network.hidden), activation_fn=activation),
        seed=seed, device="cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cartpole-dqn")
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, default=1, help="runs of each, alternating")
    ap.add_argument("--eval", type=int, default=0, help="deterministic eval episodes (0: none)")
    ap.add_argument("--only", choices=["ours", "sb3"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from agents import agent_configs
    from agents.common import evaluate
    from agents.dqn import DQN
    from lab.spec import load_spec
    from lab.tracking import ListLogger

    # the schedule horizon of both is --steps (SB3: learn(total_timesteps=steps))
    spec = load_spec(args.preset, [f"agent.total_timesteps={args.steps}"], agent_configs())
    rates: dict[str, list[float]] = {"ours": [], "sb3": []}
    cpu_rates: dict[str, list[float]] = {"ours": [], "sb3": []}
    for seed in range(args.seeds):
        for name in ("ours", "sb3"):
            if args.only not in (None, name):
                continue
            if name == "ours":
                agent = DQN(spec.agent, spec.env, seed=seed)
                t, c = time.perf_counter(), time.process_time()
                agent.learn(args.steps, ListLogger())
            else:
                agent = sb3_dqn(spec, seed)
                t, c = time.perf_counter(), time.process_time()
                agent.learn(args.steps)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            done = agent.num_timesteps
            rates[name].append(done / dt)
            cpu_rates[name].append(done / dc)
            line = (f"{name:4s} seed {seed}: {done} steps in {dt:6.1f} s = {done / dt:6.0f} steps/s"
                    f" ({done / dc:6.0f} per CPU s)")
            if args.eval:
                returns = evaluate(agent, spec.env, args.eval, deterministic=True)
                line += f"   eval mean {np.mean(returns):6.1f} (min {np.min(returns):.0f})"
            print(line, flush=True)
    if rates["ours"] and rates["sb3"]:
        ours, sb3 = np.mean(rates["ours"]), np.mean(rates["sb3"])
        print(f"mean steps/s: ours {ours:.0f}, sb3 {sb3:.0f}, ratio {ours / sb3:.2f}x")
        ours, sb3 = np.mean(cpu_rates["ours"]), np.mean(cpu_rates["sb3"])
        print(f"per CPU second: ours {ours:.0f}, sb3 {sb3:.0f}, ratio {ours / sb3:.2f}x")


if __name__ == "__main__":
    main()
