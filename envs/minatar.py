"""MinAtar (Young & Tian 2019): five Atari games on a 10x10 grid, as Gymnasium envs.

``MinAtar/<Game>-v1`` (Asterix, Breakout, Freeway, Seaquest, SpaceInvaders; the minimal action
set, 3 actions for Breakout) and ``-v0`` (all 6 actions), the ids the ``minatar`` package uses,
registered by ``envs/__init__.py`` with this adapter instead of the package's own class:

- observations are channels-first float32 ``(C, 10, 10)`` in {0, 1}, one channel per kind of
  object (Breakout: paddle, ball, trail, brick), what a conv net takes as is
  (``channels_first=False`` gives the package's ``(10, 10, C)`` layout);
- ``reset(seed=...)`` seeds the game (the package's class ignores gymnasium's seeding, so it
  fails ``check_env``);
- ``render_mode="rgb_array"`` draws the grid in colours, ``cell_pixels`` per cell, without
  matplotlib or seaborn;
- the paper's defaults: sticky actions with probability 0.1, difficulty ramping on.

The ``minatar`` package is imported when an env is made, not before.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")

# Background, then one colour per channel (channel k drawn over channels < k, as MinAtar's
# own display does).
PALETTE = np.array([
    (0, 0, 0), (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
    (213, 94, 0), (204, 121, 167), (255, 255, 255), (153, 153, 153), (120, 60, 200),
], dtype=np.uint8)


def game_id(game: str, version: int) -> str:
    """``("space_invaders", 1)`` -> ``"MinAtar/SpaceInvaders-v1"``."""
    return f"MinAtar/{game.title().replace('_', '')}-v{version}"


class MinAtarEnv(gym.Env):
    """One MinAtar game; reward = the game's (+1 per brick, enemy, crossing...)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, game: str = "breakout", use_minimal_action_set: bool = True,
                 sticky_action_prob: float = 0.1, difficulty_ramping: bool = True,
                 channels_first: bool = True, render_mode: str | None = None,
                 cell_pixels: int = 16):
        if game not in GAMES:
            raise ValueError(f"unknown MinAtar game {game!r} (valid games: {', '.join(GAMES)})")
        try:
            from minatar import Environment
        except ImportError:
            raise ImportError("MinAtar envs need the minatar package: pip install minatar"
                              ) from None
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} (valid: rgb_array)")
        self.game = Environment(game, sticky_action_prob=sticky_action_prob,
                                difficulty_ramping=difficulty_ramping)
        self.action_set = (list(self.game.minimal_action_set()) if use_minimal_action_set
                           else list(range(self.game.num_actions())))
        h, w, c = (int(d) for d in self.game.state_shape())
        self.channels_first = channels_first
        shape = (c, h, w) if channels_first else (h, w, c)
        self.observation_space = spaces.Box(0.0, 1.0, shape, np.float32)
        self.action_space = spaces.Discrete(len(self.action_set))
        self.render_mode = render_mode
        self.cell_pixels = int(cell_pixels)

    def _obs(self) -> np.ndarray:
        state = self.game.state()
        if self.channels_first:
            state = state.transpose(2, 0, 1)
        return np.ascontiguousarray(state, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        # the game's own RandomState (start positions, sticky actions) follows np_random
        self.game.seed(int(self.np_random.integers(2**31 - 1)))
        self.game.reset()
        return self._obs(), {}

    def step(self, action):
        reward, done = self.game.act(self.action_set[int(action)])
        return self._obs(), float(reward), bool(done), False, {}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        state = self.game.state()  # (10, 10, C) bool
        c = state.shape[-1]
        index = (state * np.arange(1, c + 1)).max(axis=-1)  # the top channel of each cell
        image = PALETTE[index % len(PALETTE)]
        k = self.cell_pixels
        return np.ascontiguousarray(image.repeat(k, axis=0).repeat(k, axis=1))
