"""CartPole as a POMDP: the agent sees where the cart and the pole are, not how fast they move.

CartPole's state is ``[x, x_dot, theta, theta_dot]``; ``lab/CartPolePOMDP-v0`` observes only
``[x, theta]`` (float32, shape (2,)), so a memoryless policy cannot tell a pole swinging up
from one falling down: a recurrent core (or frame stacking) is needed. Everything else
(dynamics, reward, termination, ``max_episode_steps=500``, rendering) is CartPole-v1's.

Two entry points, the same observation:

- ``make_cartpole_pomdp(**kwargs)``: ``HideVelocity(CartPoleEnv(**kwargs))``, for ``gym.make``.
- ``make_cartpole_pomdp_vec(num_envs, **kwargs)``: ``HideVelocityVec(CartPoleVectorEnv(...))``,
  the numpy-vectorized version for ``gym.make_vec(..., vectorization_mode="vector_entry_point")``;
  it keeps CartPoleVectorEnv's NEXT_STEP autoreset.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv, CartPoleVectorEnv
from gymnasium.vector import VectorObservationWrapper
from gymnasium.vector.utils import batch_space

POSITION_INDICES = (0, 2)  # x and theta in CartPole's [x, x_dot, theta, theta_dot]


def _kept_box(box: spaces.Box, keep: tuple[int, ...]) -> spaces.Box:
    idx = list(keep)
    return spaces.Box(box.low[idx], box.high[idx], dtype=box.dtype)


class HideVelocity(gym.ObservationWrapper):
    """Keep only the entries ``keep`` of a Box observation (default: CartPole's x and theta)."""

    def __init__(self, env: gym.Env, keep: tuple[int, ...] = POSITION_INDICES):
        super().__init__(env)
        self.keep = list(keep)
        self.observation_space = _kept_box(env.observation_space, tuple(keep))

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep]


class HideVelocityVec(VectorObservationWrapper):
    """``HideVelocity`` for a vector env: keeps the columns ``keep`` of the batched observation."""

    def __init__(self, env, keep: tuple[int, ...] = POSITION_INDICES):
        super().__init__(env)
        self.keep = list(keep)
        self.single_observation_space = _kept_box(env.single_observation_space, tuple(keep))
        self.observation_space = batch_space(self.single_observation_space, env.num_envs)

    def observations(self, observations: np.ndarray) -> np.ndarray:
        return observations[:, self.keep]


def make_cartpole_pomdp(render_mode: str | None = None, sutton_barto_reward: bool = False):
    return HideVelocity(CartPoleEnv(sutton_barto_reward=sutton_barto_reward,
                                    render_mode=render_mode))


def make_cartpole_pomdp_vec(num_envs: int = 1, max_episode_steps: int = 500,
                            render_mode: str | None = None, sutton_barto_reward: bool = False):
    return HideVelocityVec(CartPoleVectorEnv(num_envs=num_envs,
                                             max_episode_steps=max_episode_steps,
                                             render_mode=render_mode,
                                             sutton_barto_reward=sutton_barto_reward))
