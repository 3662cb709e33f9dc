"""Pieces every agent shares: building vector envs, episode bookkeeping, evaluation, seeding."""

from __future__ import annotations

import functools
import random
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers the lab/... env ids)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def vectorization_mode(env_spec) -> str:
    mode = env_spec.vectorization
    if mode == "auto":
        wrapped = getattr(env_spec, "wrapper", None) is not None
        vector = not wrapped and gym.spec(env_spec.id).vector_entry_point
        mode = "vector_entry_point" if vector else "sync"
    return mode


def _env_kwargs(env_spec, render_mode: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(env_spec.kwargs)
    wrapped = getattr(env_spec, "wrapper", None) is not None
    if wrapped and "frameskip" in gym.spec(env_spec.id).kwargs:
        kwargs.setdefault("frameskip", 1)  # the Atari wrapper skips frames itself (ALE/...-v5)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    return kwargs


def env_wrapper(env_spec, training: bool):
    """The function that wraps one env of ``env_spec`` (``env.wrapper``), or None. Training
    envs get the whole preprocessing; evaluation and rendering (``training=False``) leave out
    what changes the episodes and rewards (episodic life, reward clipping)."""
    wrapper = getattr(env_spec, "wrapper", None)
    if wrapper is None:
        return None
    from envs.atari import wrap_atari

    return functools.partial(wrap_atari, training=training, **wrapper.options())


def make_vec_env(env_spec, seed: int | None = None, render_mode: str | None = None):
    """A Gymnasium vector env for ``env_spec`` (NEXT_STEP autoreset: see EpisodeTracker)."""
    wrap = env_wrapper(env_spec, training=True)
    env = gym.make_vec(env_spec.id, num_envs=env_spec.num_envs,
                       vectorization_mode=vectorization_mode(env_spec),
                       wrappers=None if wrap is None else [wrap],
                       **_env_kwargs(env_spec, render_mode))
    if seed is not None:
        env.action_space.seed(seed)
    return env


def make_env(env_spec, render_mode: str | None = None) -> gym.Env:
    """One (non-vector) env, for evaluation and rendering."""
    env = gym.make(env_spec.id, **_env_kwargs(env_spec, render_mode))
    wrap = env_wrapper(env_spec, training=False)
    return env if wrap is None else wrap(env)


def records_games(env_spec) -> bool:
    """Whether the training envs report whole games in ``info["episode"]`` (the Atari wrapper's
    ``RecordEpisodeStatistics`` under episodic life and reward clipping): then the agents log
    those games as ``train/episode_return`` / ``train/episode_length``, the real score, as
    SB3's Monitor does, instead of the clipped returns of single lives."""
    return getattr(env_spec, "wrapper", None) is not None


def recorded_episodes(infos: dict) -> list[tuple[float, int]]:
    """(return, length) of the episodes that ``RecordEpisodeStatistics`` closed on one vector
    step (``infos["episode"]`` where ``infos["_episode"]``)."""
    stats = infos.get("episode")
    if stats is None:
        return []
    done = np.flatnonzero(infos.get("_episode", np.ones(len(stats["r"]), dtype=bool)))
    return [(float(stats["r"][i]), int(stats["l"][i])) for i in done]


class EpisodeTracker:
    """Running returns and lengths of a NEXT_STEP-autoreset vector env.

    ``step(rewards, terminated, truncated)`` returns the (return, length) pairs of the episodes
    that ended on this step. ``valid`` is the mask of envs whose step was a real transition:
    an env that ended on the previous step was only reset by this one (reward 0, nothing to
    learn from), so it is False there.
    """

    def __init__(self, num_envs: int):
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.valid = np.ones(num_envs, dtype=bool)
        self._ended = np.zeros(num_envs, dtype=bool)

    def step(self, rewards, terminated, truncated) -> list[tuple[float, int]]:
        self.valid = ~self._ended
        self.returns += np.where(self.valid, rewards, 0.0)
        self.lengths += self.valid
        ended = np.logical_or(terminated, truncated) & self.valid
        finished = [(float(self.returns[i]), int(self.lengths[i])) for i in np.flatnonzero(ended)]
        self.returns[ended] = 0.0
        self.lengths[ended] = 0
        self._ended = ended
        return finished


def log_episodes(logger, finished: list[tuple[float, int]], step: int) -> None:
    """Log the episodes that ended on one env step: with several envs, more than one can end
    on the same step, and a metric history holds one value per step, so they are averaged."""
    if finished:
        returns, lengths = zip(*finished, strict=True)
        logger.log({"train/episode_return": sum(returns) / len(returns),
                    "train/episode_length": sum(lengths) / len(lengths)}, step=step)


def evaluate(agent, env_spec, episodes: int, seed: int = 10_000,
             deterministic: bool = True) -> list[float]:
    """Returns of ``episodes`` full episodes of ``agent.predict`` on a fresh single env."""
    env = make_env(env_spec)
    returns: list[float] = []
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            state, start, total, done = None, np.ones(1, dtype=bool), 0.0, False
            while not done:
                action, state = agent.predict(obs[None], state=state, episode_start=start,
                                              deterministic=deterministic)
                obs, reward, terminated, truncated, _ = env.step(action[0])
                total += float(reward)
                start = np.zeros(1, dtype=bool)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return returns
