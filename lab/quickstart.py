"""``lab quickstart``, the main job: on CartPole, train our DQN and PPO and SB3's PPO on short
budgets, render the best as a GIF, print the comparison table and the ``mlflow ui`` command."""

from __future__ import annotations

import time

from lab.spec import load_spec
from lab.tracking import RUNS_DIR, Tracker

# (preset, budget in env steps): short enough for about 3 minutes on 2 CPU cores in all.
JOBS = [
    ("cartpole-ppo", 100_000),
    ("cartpole-sb3-ppo", 100_000),
    ("cartpole-dqn", 50_000),
]


def run_quickstart(uri: str, experiment: str, show_progress: bool = True,
                   print_table=None) -> int:
    from agents import agent_configs
    from lab import compare as cmp
    from lab import runner
    from lab.commands import env_ids
    from lab.render import record_episode, write_video

    group = f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    configs, ids = agent_configs(), env_ids()
    specs = [load_spec(name, [f"train.steps={steps}", "train.eval_episodes=20", "train.gif=false"],
                       configs, ids) for name, steps in JOBS]
    start = time.monotonic()
    results = []
    for spec in specs:
        print(f"training {spec.name} ({spec.agent.algo} on {spec.env.id}) for "
              f"{spec.train.steps:,} steps")
        tracker = Tracker(uri, experiment)
        result = runner.train(spec, tracker=tracker, device="cpu", group=group,
                              show_progress=show_progress)
        results.append((spec, result))
        print(f"  -> eval return {result.eval_mean:.1f} ± {result.eval_std:.1f}, "
              f"{result.steps_per_sec:,.0f} steps/s, {result.wall_s:.1f} s in all")

    best_spec, best = max(results, key=lambda sr: sr[1].eval_mean)
    tracker = Tracker(uri, experiment)
    run = tracker.client.get_run(best.run_id)
    _, agent = runner.load_agent(tracker.client, run)
    frames, fps = record_episode(agent, best_spec.env, best_spec.train.gif_max_frames)
    gif = write_video(frames, RUNS_DIR / "quickstart-best.gif", fps)
    tracker.run_id = best.run_id
    tracker.log_artifact(gif)
    print(f"best: {best_spec.name} (run {best.run_id}); its episode: {gif} "
          f"({len(frames)} frames)")

    rows, curves = cmp.collect(tracker.client, tracker.experiment_id, group,
                               "eval/return_mean", "train/episode_return", None)
    if print_table is not None:
        print_table(rows, "CartPole-v1: final eval return (20 episodes), ours vs SB3")
    else:
        print(cmp.markdown_table(rows))
    compare_id = cmp.log_comparison(Tracker(uri, experiment), rows, curves,
                                    "eval/return_mean", "train/episode_return", group)
    print(f"quickstart took {time.monotonic() - start:.0f} s; comparison run {compare_id}")
    print(f"see the runs and curves: mlflow ui --backend-store-uri {uri}")
    return 0
