"""GridWorld: a small stochastic grid MDP that hands out its own model.

The default map is Russell & Norvig's 4x3 world (AIMA, chapter 17)::

    . . . G        G: goal, +1, episode ends
    . # . P        P: pit,  -1, episode ends
    S . . .        #: wall, S: start; every other move costs ``step_reward`` (-0.04)

Observation: the state index (``Discrete(S)``), states numbered row-major over the cells that
are not walls. Actions (``Discrete(4)``): 0 up, 1 right, 2 down, 3 left. A move goes where it
was meant to with probability ``1 - slip`` and to each of the two perpendicular directions with
``slip / 2``; a move into a wall or off the grid stays put. Episodes start on ``S``, or with
``random_start=True`` on a uniformly drawn non-terminal cell ("exploring starts": every state
gets visited, which sample-based learners like Q-learning need; the model is the same).

The model, for planners (value iteration, exact policy evaluation)::

    P, R, terminal = env.unwrapped.transition_model()
    P[s, a, s2]   probability of s -> s2 under action a   (float64, shape (S, A, S), rows sum to 1)
    R[s, a]       expected immediate reward of a in s     (float64, shape (S, A))
    terminal[s]   True for goal and pit cells              (bool, shape (S,))

Terminal states are absorbing with reward 0, so ``V = max_a (R + gamma * P @ V)`` needs no
special case for them. The reward of a step depends only on the cell it lands in
(``reward_into[s2]``), and ``R[s, a] = sum_s2 P[s, a, s2] * reward_into[s2]``. ``step`` samples
from the very ``P`` it hands out, so env and model cannot disagree.

Rendering follows Gymnasium's cartpole.py: the dynamics never touch pygame; ``render`` draws
the grid with ``draw_grid`` in ``"human"`` (a window) or ``"rgb_array"`` (an (H, W, 3) uint8
frame) mode.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

MAPS: dict[str, tuple[str, ...]] = {
    "4x3": ("...G", ".#.P", "S..."),
    "4x4": ("S...", ".#.P", "...#", "P..G"),
}
# (row, col) offsets of up, right, down, left: a +-1 turn is perpendicular.
MOVES = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])
CELL_PX = 100
COLORS = {
    "floor": (235, 235, 235), "wall": (60, 60, 60), "goal": (80, 180, 90), "pit": (200, 70, 60),
    "start": (170, 200, 235), "line": (150, 150, 150), "agent": (40, 90, 200),
}


class TransitionModel(NamedTuple):
    P: np.ndarray  # (S, A, S) transition probabilities
    R: np.ndarray  # (S, A) expected immediate reward
    terminal: np.ndarray  # (S,) bool


def build_model(grid: tuple[str, ...], slip: float, step_reward: float, goal_reward: float,
                pit_reward: float) -> tuple[TransitionModel, np.ndarray, list[tuple[int, int]]]:
    """The MDP of a map: (model, reward_into[S], cells) with cells[s] = (row, col) of state s."""
    rows, cols = len(grid), len(grid[0])
    if any(len(line) != cols for line in grid):
        raise ValueError(f"grid rows must have equal length, got {grid}")
    cells = [(r, c) for r in range(rows) for c in range(cols) if grid[r][c] != "#"]
    index = {cell: s for s, cell in enumerate(cells)}
    kinds = [grid[r][c] for r, c in cells]
    n_states, n_actions = len(cells), len(MOVES)
    terminal = np.array([k in "GP" for k in kinds])
    reward_into = np.array([goal_reward if k == "G" else pit_reward if k == "P" else step_reward
                            for k in kinds], dtype=np.float64)

    def landing(cell: tuple[int, int], move: int) -> int:
        r, c = cell[0] + MOVES[move][0], cell[1] + MOVES[move][1]
        inside = 0 <= r < rows and 0 <= c < cols and grid[r][c] != "#"
        return index[(r, c)] if inside else index[cell]

    P = np.zeros((n_states, n_actions, n_states))
    for s, cell in enumerate(cells):
        for a in range(n_actions):
            if terminal[s]:
                P[s, a, s] = 1.0
                continue
            for move, prob in ((a, 1.0 - slip), ((a + 1) % 4, slip / 2), ((a + 3) % 4, slip / 2)):
                P[s, a, landing(cell, move)] += prob
    R = np.where(terminal[:, None], 0.0, P @ reward_into)
    return TransitionModel(P, R, terminal), reward_into, cells


class GridWorldEnv(gym.Env):
    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 4}

    def __init__(self, map_name: str = "4x3", grid: list[str] | None = None, slip: float = 0.2,
                 step_reward: float = -0.04, goal_reward: float = 1.0, pit_reward: float = -1.0,
                 random_start: bool = False, render_mode: str | None = None):
        if not 0.0 <= slip <= 1.0:
            raise ValueError(f"slip must be in [0, 1], got {slip}")
        if grid is None and map_name not in MAPS:
            raise ValueError(f"unknown map_name {map_name!r} (valid: {', '.join(MAPS)})")
        self.grid = tuple(grid) if grid is not None else MAPS[map_name]
        starts = [(r, c) for r, line in enumerate(self.grid)
                  for c, kind in enumerate(line) if kind == "S"]
        if len(starts) != 1:
            raise ValueError(f"grid needs exactly one start cell 'S', got {len(starts)}")
        self.model, self.reward_into, self.cells = build_model(
            self.grid, slip, step_reward, goal_reward, pit_reward)
        self.start_state = self.cells.index(starts[0])
        self.random_start = random_start
        self._cdf = np.cumsum(self.model.P, axis=2)
        self._cdf[..., -1] = 1.0  # guard the sampler against round-off

        n_states = len(self.cells)
        self.observation_space = spaces.Discrete(n_states)
        self.action_space = spaces.Discrete(len(MOVES))
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.state: int | None = None
        self.window = None
        self.clock = None

    def transition_model(self) -> TransitionModel:
        """(P[S, A, S'], R[S, A], terminal[S]): copies, see the module docstring."""
        return TransitionModel(*(x.copy() for x in self.model))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self.random_start:
            self.state = int(self.np_random.choice(np.flatnonzero(~self.model.terminal)))
        else:
            self.state = self.start_state
        if self.render_mode == "human":
            self.render()
        return np.int64(self.state), {}

    def step(self, action):
        assert self.action_space.contains(action), f"{action!r} ({type(action)}) invalid"
        assert self.state is not None, "Call reset before using step method."
        cdf = self._cdf[self.state, int(action)]
        self.state = int(np.searchsorted(cdf, self.np_random.random(), side="right"))
        reward = float(self.reward_into[self.state])
        terminated = bool(self.model.terminal[self.state])
        if self.render_mode == "human":
            self.render()
        return np.int64(self.state), reward, terminated, False, {}

    # ---- rendering: nothing below touches the dynamics ---------------------------------------

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() without a render_mode: pass render_mode='rgb_array' or "
                            "'human' to gym.make")
            return None
        import pygame

        size = (len(self.grid[0]) * CELL_PX, len(self.grid) * CELL_PX)
        if self.render_mode == "human" and self.window is None:
            pygame.init()
            pygame.display.init()
            self.window = pygame.display.set_mode(size)
            pygame.display.set_caption("lab/GridWorld")
            self.clock = pygame.time.Clock()
        surface = pygame.Surface(size)
        agent = self.cells[self.state] if self.state is not None else None
        draw_grid(surface, self.grid, agent)
        if self.render_mode == "human":
            pygame.event.pump()
            self.window.blit(surface, (0, 0))
            pygame.display.flip()
            self.clock.tick(self.metadata["render_fps"])
            return None
        return np.transpose(np.array(pygame.surfarray.pixels3d(surface)), axes=(1, 0, 2))

    def close(self):
        if self.window is not None:
            import pygame

            pygame.display.quit()
            pygame.quit()
            self.window = None


def draw_grid(surface, grid: tuple[str, ...], agent: tuple[int, int] | None) -> None:
    """Paint the map (and the agent at ``agent`` = (row, col)) onto a pygame surface."""
    import pygame

    kind_color = {"#": "wall", "G": "goal", "P": "pit", "S": "start"}
    surface.fill(COLORS["floor"])
    for r, line in enumerate(grid):
        for c, kind in enumerate(line):
            rect = pygame.Rect(c * CELL_PX, r * CELL_PX, CELL_PX, CELL_PX)
            pygame.draw.rect(surface, COLORS[kind_color.get(kind, "floor")], rect)
            pygame.draw.rect(surface, COLORS["line"], rect, width=2)
    if agent is not None:
        center = (agent[1] * CELL_PX + CELL_PX // 2, agent[0] * CELL_PX + CELL_PX // 2)
        pygame.draw.circle(surface, COLORS["agent"], center, CELL_PX // 3)
