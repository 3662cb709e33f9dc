"""Tabular RL: value iteration on a known model, Q-learning from samples.

The math is a handful of pure numpy functions, tested against hand-computed values:

- ``bellman_backup(P, R, gamma, V) -> Q``: ``Q[s, a] = R[s, a] + gamma * sum_s2 P[s, a, s2] V[s2]``
- ``value_iteration(P, R, gamma, tol) -> (V, Q, policy, iterations)``: repeat the backup with
  ``V = max_a Q`` until ``max |V_new - V| < tol``.
- ``policy_evaluation_exact(P, R, gamma, policy) -> V``: solve ``(I - gamma P_pi) V = R_pi``.
- ``q_learning_update(q_sa, reward, q_next, terminated, alpha, gamma) -> (q_sa_new, td_error)``
- ``visit_count_step_size(...)``: Q-learning's step size, from the visits of the pair.
- ``linear_schedule(start, end, duration, t)``: the epsilon schedule.

Models follow ``envs/gridworld.py``: ``P[S, A, S']``, ``R[S, A]`` (expected immediate reward),
terminal states absorbing with reward 0. Two agents keep the contract of ``agents/base.py``:

- ``ValueIteration`` (algo ``value_iteration``) plans on the env's own model
  (``env.unwrapped.transition_model()``), then acts greedily in the real env.
- ``QLearning`` (algo ``q_learning``): epsilon-greedy tabular Q-learning in a vector env.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from agents.common import EpisodeTracker, make_env, make_vec_env
from lab.checkpoint import check_finite, generator_state, set_generator_state

# ---- pure math ------------------------------------------------------------------------------


def bellman_backup(P: np.ndarray, R: np.ndarray, gamma: float, V: np.ndarray) -> np.ndarray:
    """Q[s, a] = R[s, a] + gamma * sum_s2 P[s, a, s2] * V[s2]   (P: (S, A, S), R: (S, A))."""
    return R + gamma * (P @ V)


def value_iteration(
    P: np.ndarray,
    R: np.ndarray,
    gamma: float,
    tol: float = 1e-10,
    max_iterations: int = 100_000,
    on_sweep: Callable[[int, float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Optimal (V, Q, greedy policy, sweeps) of the MDP (P, R, gamma), from V = 0.

    Stops after the first sweep whose Bellman residual ``max |V_new - V|`` is below ``tol``
    (then ``|V - V*| <= tol * gamma / (1 - gamma)``) or after ``max_iterations`` sweeps.
    ``on_sweep(sweep, residual)`` is called after every sweep (for logging).
    """
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    V = np.zeros(P.shape[0])
    for sweep in range(1, max_iterations + 1):
        Q = bellman_backup(P, R, gamma, V)
        V_new = Q.max(axis=1)
        residual = float(np.max(np.abs(V_new - V)))
        V = V_new
        if on_sweep is not None:
            on_sweep(sweep, residual)
        if residual < tol:
            break
    return V, Q, Q.argmax(axis=1), sweep


def policy_evaluation_exact(
    P: np.ndarray,
    R: np.ndarray,
    gamma: float,
    policy: np.ndarray,
    terminal: np.ndarray | None = None,
) -> np.ndarray:
    """V^pi from one linear solve of ``(I - gamma P_pi) V = R_pi``.

    ``policy``: actions (S,) of a deterministic policy, or probabilities (S, A). ``terminal``
    (optional, bool (S,)): states pinned to V = 0, which makes ``gamma = 1`` solvable when every
    other state reaches a terminal one.
    """
    n_states = P.shape[0]
    pi = np.eye(P.shape[1])[policy] if policy.ndim == 1 else policy
    P_pi = np.einsum("sa,sat->st", pi, P)
    R_pi = np.einsum("sa,sa->s", pi, R)
    free = np.ones(n_states, dtype=bool) if terminal is None else ~terminal
    V = np.zeros(n_states)
    A = np.eye(free.sum()) - gamma * P_pi[np.ix_(free, free)]
    V[free] = np.linalg.solve(A, R_pi[free])
    return V


def q_learning_update(
    q_sa: float,
    reward: float,
    q_next: np.ndarray,
    terminated: bool,
    alpha: float,
    gamma: float,
) -> tuple[float, float]:
    """One Q-learning step: (new Q[s, a], td_error).

    target = reward + gamma * max_a2 Q[s2, a2], without the bootstrap when s2 is terminal
    (a time-limit truncation still bootstraps); Q[s, a] += alpha * (target - Q[s, a]).
    """
    target = reward + (0.0 if terminated else gamma * float(np.max(q_next)))
    td_error = target - q_sa
    return q_sa + alpha * td_error, td_error


def visit_count_step_size(alpha_start: float, power: float, alpha_min: float,
                          visits: float) -> float:
    """Step size of the ``visits``-th update of a pair: max(alpha_min, alpha_start / visits**power).

    power 1 with alpha_start 1 averages the targets; power 0 is a constant alpha_start.
    """
    return max(alpha_min, alpha_start / max(visits, 1.0) ** power)


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """``start`` at t = 0, straight down (or up) to ``end`` at t = duration, then ``end``."""
    if duration <= 0:
        return end
    return start + (end - start) * min(t / duration, 1.0)


def _state_indices(obs) -> np.ndarray:
    """Discrete observations (scalar, (n,) or (n, 1)) as int64 indices, shape kept (n,) or ()."""
    obs = np.asarray(obs, dtype=np.int64)
    return obs.reshape(-1) if obs.ndim == 2 else obs


def _crossed(step: int, stride: int, every: int) -> bool:
    """Did the last ``stride`` steps, ending at ``step``, pass a multiple of ``every``?"""
    return step // every != (step - stride) // every


# ---- value iteration agent ------------------------------------------------------------------


class ValueIterationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algo: Literal["value_iteration"] = "value_iteration"
    gamma: float = Field(0.99, gt=0, le=1)  # 1 is fine when every policy ends (GridWorld)
    tol: float = Field(1e-10, gt=0)  # stop when the Bellman residual max|V_new - V| < tol
    max_iterations: int = Field(100_000, ge=1)
    log_every: int = Field(1000, ge=1)  # env steps between time/steps_per_sec logs


class ValueIteration:
    """Plan on the env's exposed model, then act greedily.

    ``learn(total_steps)`` first runs value iteration on ``env.unwrapped.transition_model()``
    (the env must expose one, like ``lab/GridWorld-v0``). Planning takes no env steps: its
    sweeps are logged as ``train/bellman_residual`` with the *sweep number* as ``step`` (the one
    metric not on the env-step axis). Then the greedy policy runs in the real env until
    ``num_timesteps >= total_steps``, logging ``train/episode_return``/``episode_length``, so
    ``num_timesteps`` counts real env steps and nothing is learned from them.
    """

    Config = ValueIterationConfig

    def __init__(self, config: ValueIterationConfig, env_spec, *, device: str = "cpu",
                 seed: int = 0):
        self.config, self.env_spec, self.seed = config, env_spec, seed
        self.num_timesteps = 0
        self.iterations = 0
        self.V = self.Q = self.policy = None
        self._envs = None

    def plan(self, logger=None) -> None:
        env = make_env(self.env_spec)
        try:
            if not hasattr(env.unwrapped, "transition_model"):
                raise ValueError(f"value_iteration needs an env with transition_model(); "
                                 f"{self.env_spec.id} has none (try lab/GridWorld-v0)")
            P, R, _ = env.unwrapped.transition_model()
        finally:
            env.close()

        def on_sweep(sweep: int, residual: float) -> None:
            check_finite({"bellman_residual": residual}, sweep)
            if logger is not None:
                logger.log({"train/bellman_residual": residual}, step=sweep)

        c = self.config
        self.V, self.Q, self.policy, self.iterations = value_iteration(
            P, R, c.gamma, c.tol, c.max_iterations, on_sweep)

    def learn(self, total_steps: int, logger, checkpointer=None, progress=None) -> None:
        if self.policy is None:
            self.plan(logger)
        if self._envs is None:
            self._envs = make_vec_env(self.env_spec, self.seed)
            self._obs, _ = self._envs.reset(seed=self.seed + self.num_timesteps)
            self._tracker = EpisodeTracker(self._envs.num_envs)
        t0, steps0, last_return = time.perf_counter(), self.num_timesteps, None
        while self.num_timesteps < total_steps:
            actions = self.policy[_state_indices(self._obs)]
            self._obs, rewards, terminated, truncated, _ = self._envs.step(actions)
            self.num_timesteps += self._envs.num_envs
            for ret, length in self._tracker.step(rewards, terminated, truncated):
                last_return = ret
                logger.log({"train/episode_return": ret, "train/episode_length": length},
                           step=self.num_timesteps)
            if _crossed(self.num_timesteps, self._envs.num_envs, self.config.log_every):
                rate = (self.num_timesteps - steps0) / max(time.perf_counter() - t0, 1e-9)
                logger.log({"time/steps_per_sec": rate}, step=self.num_timesteps)
                if progress is not None:
                    progress(self.num_timesteps, last_return)
            if checkpointer is not None:
                checkpointer.maybe_save(self.num_timesteps, self.state_dict)

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = False):
        """The greedy action of the plan (deterministic either way)."""
        if self.policy is None:
            self.plan()
        return self.policy[_state_indices(obs)], state

    def state_dict(self) -> dict:
        planned = self.policy is not None
        return {
            "V": torch.from_numpy(self.V) if planned else None,
            "Q": torch.from_numpy(self.Q) if planned else None,
            "policy": torch.from_numpy(self.policy) if planned else None,
            "iterations": self.iterations,
            "num_timesteps": self.num_timesteps,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["policy"] is not None:
            self.V, self.Q = state["V"].numpy().copy(), state["Q"].numpy().copy()
            self.policy = state["policy"].numpy().copy()
        self.iterations = int(state["iterations"])
        self.num_timesteps = int(state["num_timesteps"])
        self._envs = None  # the episode in progress restarts


# ---- Q-learning agent -----------------------------------------------------------------------


class QLearningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algo: Literal["q_learning"] = "q_learning"
    gamma: float = Field(0.99, gt=0, le=1)
    # step size of the n-th update of Q[s, a]: max(alpha_min, alpha_start / n ** alpha_power).
    # Counting visits per pair keeps rarely visited states learning; alpha_power in (0.5, 1]
    # meets Robbins-Monro (0.8: Even-Dar & Mansour's fast polynomial rate), 0 is a constant.
    alpha_start: float = Field(1.0, gt=0, le=1)
    alpha_power: float = Field(0.8, ge=0, le=1)
    alpha_min: float = Field(0.0, ge=0, le=1)
    # exploration: linear from epsilon_start to epsilon_end over epsilon_decay_steps env steps
    epsilon_start: float = Field(1.0, ge=0, le=1)
    epsilon_end: float = Field(0.1, ge=0, le=1)
    epsilon_decay_steps: int = Field(50_000, ge=0)
    q_init: float = 0.0  # initial Q value of every (s, a); optimism explores too
    log_every: int = Field(1000, ge=1)  # env steps between loss/time logs


class QLearning:
    """Epsilon-greedy tabular Q-learning (Watkins) in ``make_vec_env(env_spec)``.

    Each env of the vector env updates the table in turn, every env step; the reset step after
    an episode end (NEXT_STEP autoreset) is masked out. ``num_timesteps`` counts env steps
    (``num_envs`` per vector step) and drives both schedules, so chunks of ``learn`` calls
    follow one schedule. Observation and action spaces must be ``Discrete``.
    """

    Config = QLearningConfig

    def __init__(self, config: QLearningConfig, env_spec, *, device: str = "cpu", seed: int = 0):
        self.config, self.env_spec, self.seed = config, env_spec, seed
        self.num_timesteps = 0
        self.rng = np.random.default_rng(seed)
        env = make_env(env_spec)
        obs_space, act_space = env.observation_space, env.action_space
        env.close()
        if not (hasattr(obs_space, "n") and hasattr(act_space, "n")):
            raise ValueError(f"q_learning needs Discrete observations and actions; {env_spec.id} "
                             f"has {obs_space} and {act_space}")
        self.Q = np.full((int(obs_space.n), int(act_space.n)), float(config.q_init))
        self.visits = np.zeros_like(self.Q)  # updates of each Q[s, a] so far
        self._envs = None

    def epsilon(self) -> float:
        c = self.config
        return linear_schedule(c.epsilon_start, c.epsilon_end, c.epsilon_decay_steps,
                               self.num_timesteps)

    def alpha(self, visits: float) -> float:
        c = self.config
        return visit_count_step_size(c.alpha_start, c.alpha_power, c.alpha_min, visits)

    def _act(self, states: np.ndarray, epsilon: float) -> np.ndarray:
        greedy = self.Q[states].argmax(axis=-1)
        explore = self.rng.random(states.shape) < epsilon
        return np.where(explore, self.rng.integers(self.Q.shape[1], size=states.shape), greedy)

    def learn(self, total_steps: int, logger, checkpointer=None, progress=None) -> None:
        c = self.config
        if self._envs is None:
            self._envs = make_vec_env(self.env_spec, self.seed)
            self._obs, _ = self._envs.reset(seed=self.seed + self.num_timesteps)
            self._tracker = EpisodeTracker(self._envs.num_envs)
        n_envs = self._envs.num_envs
        t0, steps0, last_return = time.perf_counter(), self.num_timesteps, None
        td_abs, td_count = 0.0, 0
        while self.num_timesteps < total_steps:
            states = _state_indices(self._obs)
            actions = self._act(states, self.epsilon())
            next_obs, rewards, terminated, truncated, _ = self._envs.step(actions)
            next_states = _state_indices(next_obs)
            finished = self._tracker.step(rewards, terminated, truncated)
            for i in np.flatnonzero(self._tracker.valid):
                s, a = states[i], actions[i]
                self.visits[s, a] += 1
                alpha = self.alpha(self.visits[s, a])
                self.Q[s, a], td = q_learning_update(self.Q[s, a], float(rewards[i]),
                                                     self.Q[next_states[i]], bool(terminated[i]),
                                                     alpha, c.gamma)
                check_finite({"td_error": td}, self.num_timesteps)
                td_abs, td_count = td_abs + abs(td), td_count + 1
            self._obs = next_obs
            self.num_timesteps += n_envs

            for ret, length in finished:
                last_return = ret
                logger.log({"train/episode_return": ret, "train/episode_length": length},
                           step=self.num_timesteps)
            if _crossed(self.num_timesteps, n_envs, c.log_every):
                rate = (self.num_timesteps - steps0) / max(time.perf_counter() - t0, 1e-9)
                logger.log({"loss/td_error": td_abs / max(td_count, 1),
                            "train/epsilon": self.epsilon(), "time/steps_per_sec": rate,
                            "train/visits_min": float(self.visits.min())},
                           step=self.num_timesteps)
                td_abs, td_count = 0.0, 0
                if progress is not None:
                    progress(self.num_timesteps, last_return)
            if checkpointer is not None:
                checkpointer.maybe_save(self.num_timesteps, self.state_dict)

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = False):
        """Greedy in Q if ``deterministic``, else epsilon-greedy at the current epsilon."""
        states = _state_indices(obs)
        if deterministic:
            return self.Q[states].argmax(axis=-1), state
        return self._act(states, self.epsilon()), state

    def state_dict(self) -> dict:
        return {"Q": torch.from_numpy(self.Q.copy()),
                "visits": torch.from_numpy(self.visits.copy()),
                "num_timesteps": self.num_timesteps, "rng": generator_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        self.Q = state["Q"].numpy().astype(np.float64)
        self.visits = state["visits"].numpy().astype(np.float64)
        self.num_timesteps = int(state["num_timesteps"])
        set_generator_state(self.rng, state["rng"])
        self._envs = None  # the episode in progress restarts
