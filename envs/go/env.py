"""Go as a single-agent Gymnasium env: the agent plays one colour against an opponent policy.

``gym.make("lab/Go9x9-v0")`` (also ``Go7x7``, ``Go5x5``, and ``lab/Go-v0`` with ``size=``).

* Actions: ``Discrete(N*N + 1)``, ``row * N + col`` with row 0 = rank 1 (``a1 = 0``), the pass
  last (OpenSpiel's numbering, as in ``envs/go/rules.py``).
* Observation: ``Box(0, 1, (5, N, N), uint8)`` planes from the agent's side: own stones,
  opponent stones, empty points, colour to move (all ones when the agent is Black), the last
  move (one point, none after a pass or at the start).
* ``info["action_mask"]`` (bool, ``N*N + 1``) and ``action_masks()``: the legal moves, as
  sb3-contrib's MaskablePPO expects. All False once the game is over.
* Reward 0 until the end, then +1 / -1 / 0 by the Tromp-Taylor score from the agent's side
  (``reward="margin"``: the score margin itself, komi included).
* The game ends (``terminated``) after two passes. At the move cap (``max_moves``, default
  ``2*N*N`` plies, passes included) it is scored as it stands and ``truncated`` is True.
* An illegal action raises ``ValueError`` naming the move and the reason; with
  ``illegal_action="penalty"`` it ends the episode instead with reward ``illegal_penalty`` and
  ``info["illegal_action"] = True``, the board unchanged.
* The opponent is any callable ``Position -> move`` (it gets a copy). The default plays a
  uniformly random legal non-pass move, passing only when nothing else is legal, drawn from
  the env's ``np_random`` so that ``reset(seed=...)`` makes episodes reproducible.
* ``agent_color``: ``"black"``, ``"white"`` or ``"alternate"`` (switches at every reset; a
  seeded reset restarts the cycle with Black, so a seed still fixes the episode). When the
  agent is White the opponent's first move is played inside ``reset``.

The checkers: gymnasium's and SB3's ``check_env`` step unmasked random actions, which land on
occupied points sooner or later; run them with ``illegal_action="penalty"``. SB3's checker also
warns that the planes are an "image" below 36x36 whose bounds are not [0, 255]: the bounds are
[0, 1] on purpose, and a Go network needs its own features extractor anyway.

Rendering follows Gymnasium's cartpole.py: the game logic never touches pygame; ``render``
hands the position to ``envs/go/board_draw.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.go.rules import BLACK, EMPTY, KO_RULES, WHITE, IllegalMove, Position, move_to_text

Opponent = Callable[[Position], int]
COLORS = {"black": BLACK, "white": WHITE}
COLOR_NAMES = {BLACK: "black", WHITE: "white"}
N_PLANES = 5


def random_move(position: Position, rng: np.random.Generator) -> int:
    """A uniformly random legal non-pass move; the pass only when nothing else is legal."""
    mask = position.legal_mask()
    points = np.flatnonzero(mask[:-1])
    if len(points) == 0:
        return position.pass_move
    return int(points[rng.integers(len(points))])


class RandomPlayer:
    """The ``random`` player as a standalone callable ``Position -> move`` with its own seed."""

    def __init__(self, seed: int | None = None):
        self.rng = np.random.default_rng(seed)

    def __call__(self, position: Position) -> int:
        return random_move(position, self.rng)


def observation_planes(position: Position, color: int) -> np.ndarray:
    """The (5, N, N) uint8 planes of ``position`` seen by ``color`` (see the module docstring)."""
    n = position.size
    board = position.board
    planes = np.zeros((N_PLANES, n, n), dtype=np.uint8)
    planes[0] = board == color
    planes[1] = board == 3 - color
    planes[2] = board == EMPTY
    if color == BLACK:
        planes[3] = 1
    last = position.last_move
    if last is not None and last != position.pass_move:
        planes[4].flat[last] = 1
    return planes


class GoEnv(gym.Env):
    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        size: int = 9,
        komi: float = 7.5,
        ko: str = "positional",
        suicide: bool = False,
        opponent: Opponent | None = None,
        agent_color: str = "black",
        reward: str = "win",
        illegal_action: str = "raise",
        illegal_penalty: float = -1.0,
        max_moves: int | None = None,
        render_mode: str | None = None,
    ):
        if ko not in KO_RULES:
            raise ValueError(f"ko must be one of {', '.join(KO_RULES)}; got {ko!r}")
        if agent_color not in ("black", "white", "alternate"):
            raise ValueError(f"agent_color must be black, white or alternate; got {agent_color!r}")
        if reward not in ("win", "margin"):
            raise ValueError(f"reward must be win or margin; got {reward!r}")
        if illegal_action not in ("raise", "penalty"):
            raise ValueError(f"illegal_action must be raise or penalty; got {illegal_action!r}")
        if opponent is not None and not callable(opponent):
            raise ValueError(f"opponent must be a callable Position -> move; got {opponent!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.size = size
        self.komi = float(komi)
        self.ko = ko
        self.suicide = suicide
        self.max_moves = 2 * size * size if max_moves is None else max_moves
        Position(size, komi, ko, suicide, self.max_moves)  # validates size and max_moves
        self.opponent = opponent
        self.agent_color_mode = agent_color
        self.reward_mode = reward
        self.illegal_action = illegal_action
        self.illegal_penalty = float(illegal_penalty)
        self.render_mode = render_mode

        n = size * size
        self.observation_space = spaces.Box(0, 1, (N_PLANES, size, size), dtype=np.uint8)
        self.action_space = spaces.Discrete(n + 1)
        self.pass_action = n

        self.position = Position(size, komi, ko, suicide, self.max_moves)
        self.agent_color = BLACK
        self._episodes = 0
        self._done = False
        self.window = None
        self.clock = None

    # ---- the game ----------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._episodes = 0
        if self.agent_color_mode == "alternate":
            self.agent_color = BLACK if self._episodes % 2 == 0 else WHITE
        else:
            self.agent_color = COLORS[self.agent_color_mode]
        self._episodes += 1
        self.position = Position(self.size, self.komi, self.ko, self.suicide, self.max_moves)
        self._done = False
        opponent_move = None
        if self.agent_color == WHITE:
            opponent_move = self._opponent_plays()
        info = self._info(opponent_move)
        if self.render_mode == "human":
            self.render()
        return self._obs(), info

    def step(self, action):
        if self._done:
            raise RuntimeError("step() after the episode ended: call reset() first")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space} "
                             f"(0..{self.pass_action - 1} are points, {self.pass_action} passes)")
        move = int(action)
        pos = self.position
        try:
            pos.play(move)
        except IllegalMove as e:
            if self.illegal_action == "raise":
                raise ValueError(
                    f"illegal action {move} ({move_to_text(move, self.size)}) for "
                    f"{COLOR_NAMES[self.agent_color]}: {e.reason}; info['action_mask'] and "
                    "action_masks() give the legal moves") from None
            self._done = True
            info = self._info(None)
            info["illegal_action"] = True
            info["illegal_reason"] = e.reason
            if self.render_mode == "human":
                self.render()
            return self._obs(), self.illegal_penalty, True, False, info

        opponent_move = None
        if not pos.is_over:
            opponent_move = self._opponent_plays()
        reward, terminated, truncated = 0.0, False, False
        if pos.is_over:
            self._done = True
            reward = self._final_reward()
            terminated = pos.end_reason == "passes"
            truncated = not terminated
        info = self._info(opponent_move)
        if self.render_mode == "human":
            self.render()
        return self._obs(), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """The legal moves for the agent, bool ``(N*N + 1,)``, pass last (sb3-contrib's hook)."""
        return self.position.legal_mask()

    def _opponent_plays(self) -> int:
        pos = self.position
        if self.opponent is None:
            move = random_move(pos, self.np_random)
        else:
            move = int(self.opponent(pos.copy()))
        try:
            pos.play(move)
        except IllegalMove as e:
            raise RuntimeError(
                f"the opponent {self.opponent!r} chose an illegal move {move} "
                f"({move_to_text(move, self.size) if 0 <= move <= pos.pass_move else '?'}): "
                f"{e.reason}") from None
        return move

    def _final_reward(self) -> float:
        margin = self.position.score()
        if self.agent_color == WHITE:
            margin = -margin
        if self.reward_mode == "margin":
            return float(margin)
        return float(np.sign(margin))

    def _obs(self) -> np.ndarray:
        return observation_planes(self.position, self.agent_color)

    def _info(self, opponent_move: int | None) -> dict[str, Any]:
        pos = self.position
        info: dict[str, Any] = {
            "action_mask": pos.legal_mask(),
            "agent_color": COLOR_NAMES[self.agent_color],
            "opponent_move": opponent_move,
            "move_number": pos.move_number,
        }
        if pos.is_over:
            info["score"] = pos.score()  # Black's side, komi included
            info["winner"] = {BLACK: "black", WHITE: "white", EMPTY: "draw"}[pos.winner()]
            info["end_reason"] = pos.end_reason
        return info

    # ---- rendering: nothing below touches the game -------------------------------------------

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() without a render_mode: pass render_mode='rgb_array' or "
                            "'human' to gym.make")
            return None
        import pygame

        from envs.go.board_draw import draw_position, surface_to_rgb

        surface = draw_position(self.position)
        if self.render_mode == "human":
            if self.window is None:
                pygame.init()
                pygame.display.init()
                self.window = pygame.display.set_mode(surface.get_size())
                pygame.display.set_caption(f"lab/Go {self.size}x{self.size}")
                self.clock = pygame.time.Clock()
            pygame.event.pump()
            self.window.blit(surface, (0, 0))
            pygame.display.flip()
            self.clock.tick(self.metadata["render_fps"])
            return None
        return surface_to_rgb(surface)

    def close(self):
        if self.window is not None:
            import pygame

            pygame.display.quit()
            pygame.quit()
            self.window = None
