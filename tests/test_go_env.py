"""lab/Go*-v0 (envs/go/env.py) and its pygame board (envs/go/board_draw.py)."""

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs  # noqa: F401  (registers the ids)
from envs.go.board_draw import board_pixels, point_at, star_points
from envs.go.env import GoEnv, RandomPlayer
from envs.go.rules import BLACK, WHITE, Position

# SB3 sees a 3-D uint8 Box as an image: it notes the [0, 1] bounds and the size below 36x36.
SB3_IMAGE_NOTES = ("upper and lower bounds are not in [0, 255]", "minimal resolution")


def _warnings_of(fn) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught]


def _play_out(env, rng, first=None):
    """Random legal agent moves (masked) until the episode ends; returns the last step."""
    obs, info = first if first is not None else env.reset()
    while True:
        action = int(rng.choice(np.flatnonzero(info["action_mask"])))
        obs, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return obs, reward, terminated, truncated, info


# ---- registration and imports ---------------------------------------------------------------

def test_ids_registered_with_their_sizes():
    for env_id, n in [("lab/Go9x9-v0", 9), ("lab/Go7x7-v0", 7), ("lab/Go5x5-v0", 5)]:
        env = gym.make(env_id)
        assert env.unwrapped.size == n
        assert env.observation_space.shape == (5, n, n)
        assert env.action_space.n == n * n + 1
    env = gym.make("lab/Go-v0", size=6, komi=0.5, ko="simple").unwrapped
    assert (env.size, env.komi, env.ko, env.max_moves) == (6, 0.5, "simple", 72)


def test_go_env_imports_no_torch():
    code = ("import sys, gymnasium as gym, envs, envs.go.env, envs.go.board_draw; "
            "e = gym.make('lab/Go5x5-v0', render_mode='rgb_array'); e.reset(seed=0); e.render(); "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'lab', 'agents', 'generative')]; print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy",
                              "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr


def test_bad_kwargs_name_the_choices():
    with pytest.raises(ValueError, match="agent_color must be black, white or alternate"):
        GoEnv(agent_color="red")
    with pytest.raises(ValueError, match="ko must be one of"):
        GoEnv(ko="japanese")
    with pytest.raises(ValueError, match="board size"):
        GoEnv(size=3)


# ---- the API checkers -----------------------------------------------------------------------

@pytest.mark.parametrize("size", [5, 9])
def test_passes_gymnasium_and_sb3_checkers(size):
    env_id = f"lab/Go{size}x{size}-v0"
    # the default (raise on an illegal move): the checker's one step is on an empty board; its
    # render check opens every render mode (human included, at render_fps) once here
    raw = gym.make(env_id, render_mode="rgb_array").unwrapped
    assert _warnings_of(lambda: check_env(raw)) == []
    for color in ("black", "white", "alternate"):
        kw = dict(agent_color=color, illegal_action="penalty")
        assert _warnings_of(lambda kw=kw: check_env(gym.make(env_id, **kw).unwrapped,
                                                    skip_render_check=True)) == []
        notes = _warnings_of(lambda kw=kw: sb3_check_env(gym.make(env_id, **kw)))
        assert [w for w in notes if not any(s in w for s in SB3_IMAGE_NOTES)] == []


def test_step_types_are_what_sb3_wants():
    env = gym.make("lab/Go5x5-v0")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(12)
    assert obs.dtype == np.uint8 and obs.shape == (5, 5, 5)
    assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
    assert info["action_mask"].dtype == bool and info["action_mask"].shape == (26,)


# ---- observation, mask, rewards -------------------------------------------------------------

def test_planes_from_the_agents_side():
    env = GoEnv(size=5, agent_color="white")
    obs, info = env.reset(seed=3)
    first = info["opponent_move"]
    assert 0 <= first < 25 and env.position[first] == BLACK
    assert obs[1].flat[first] == 1 and obs[0].sum() == 0  # the opponent's stone, none of ours
    assert obs[2].sum() == 24 and obs[3].sum() == 0  # agent is white: colour plane is zeros
    assert obs[4].sum() == 1 and obs[4].flat[first] == 1  # the last move
    obs, *_ = env.step(env.pass_action if first == 0 else 0)
    black = GoEnv(size=5, agent_color="black")
    obs, _ = black.reset(seed=0)
    assert obs[3].all() and obs[2].all() and obs[4].sum() == 0


def test_action_mask_is_exactly_the_legal_moves():
    env = gym.make("lab/Go5x5-v0", ko="simple")
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs, info = env.reset(seed=int(rng.integers(1000)))
        done = False
        while not done:
            pos = env.unwrapped.position
            legal = np.array([pos.is_legal(m) for m in range(26)])
            np.testing.assert_array_equal(info["action_mask"], legal)
            np.testing.assert_array_equal(env.unwrapped.action_masks(), legal)
            action = int(rng.choice(np.flatnonzero(legal)))
            obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        assert not info["action_mask"].any()  # nothing is legal once the game is over


@pytest.mark.parametrize("color", ["black", "white"])
def test_random_episode_reward_is_the_score_from_the_agents_side(color):
    rng = np.random.default_rng(1)
    for size in (5, 9):
        env = gym.make(f"lab/Go{size}x{size}-v0", agent_color=color)
        env.reset(seed=size)
        *_, reward, terminated, truncated, info = _play_out(env, rng)
        score = env.unwrapped.position.score()
        assert terminated != truncated and reward in (-1.0, 0.0, 1.0)
        assert info["score"] == score
        assert reward == np.sign(score if color == "black" else -score)
        margin = gym.make(f"lab/Go{size}x{size}-v0", agent_color=color, reward="margin")
        margin.reset(seed=size)
        *_, m, _, _, info = _play_out(margin, np.random.default_rng(1))
        assert m == (info["score"] if color == "black" else -info["score"])


def test_two_passes_terminate_and_komi_decides():
    def passer(position):
        return position.pass_move

    env = GoEnv(size=5, komi=7.5, opponent=passer)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.pass_action)
    assert (reward, terminated, truncated) == (-1.0, True, False)  # empty board, komi wins
    assert info["end_reason"] == "passes" and info["winner"] == "white"
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)


def test_move_cap_truncates_and_scores():
    env = GoEnv(size=5, max_moves=7)
    env.reset(seed=0)
    *_, reward, terminated, truncated, info = _play_out(env, np.random.default_rng(0),
                                                        first=env.reset(seed=0))
    assert (terminated, truncated) == (False, True) and info["end_reason"] == "move-cap"
    assert info["move_number"] == 7 and reward in (-1.0, 0.0, 1.0)


def test_opponent_is_any_callable_and_gets_a_copy():
    seen = []

    def first_legal(position: Position) -> int:
        seen.append(position)
        return int(np.flatnonzero(position.legal_mask())[0])

    env = GoEnv(size=5, opponent=first_legal)
    env.reset(seed=0)
    env.step(24)
    assert env.position[0] == WHITE and seen[0] is not env.position
    env = GoEnv(size=5, opponent=RandomPlayer(seed=0))
    env.reset()
    env.step(12)
    assert env.position.move_number == 2


def test_seed_makes_the_default_opponent_reproducible():
    def moves(seed):
        env = GoEnv(size=9)
        env.reset(seed=seed)
        return [env.step(env.pass_action)[4]["opponent_move"] for _ in range(4)]

    assert moves(7) == moves(7)
    assert moves(7) != moves(8)


# ---- illegal actions ------------------------------------------------------------------------

def test_illegal_action_raises_one_clear_line_by_default():
    env = gym.make("lab/Go5x5-v0")
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(ValueError, match=r"illegal action 0 \(A1\) for black: occupied"):
        env.step(0)
    with pytest.raises(ValueError, match="not in Discrete"):
        env.step(26)


def test_illegal_action_penalty_ends_the_episode():
    env = gym.make("lab/Go5x5-v0", illegal_action="penalty", illegal_penalty=-2.5)
    env.reset(seed=0)
    obs, *_ = env.step(0)
    before = env.unwrapped.position.board
    obs2, reward, terminated, truncated, info = env.step(0)
    assert (reward, terminated, truncated) == (-2.5, True, False)
    assert info["illegal_action"] and info["illegal_reason"] == "occupied"
    np.testing.assert_array_equal(env.unwrapped.position.board, before)
    np.testing.assert_array_equal(obs2, obs)


def test_opponent_illegal_move_is_an_error():
    env = GoEnv(size=5, opponent=lambda position: 0)
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="opponent .* illegal move 0 \\(A1\\): occupied"):
        env.step(0)


# ---- colours --------------------------------------------------------------------------------

def test_alternate_colours_switch_each_reset_and_a_seed_restarts_with_black():
    env = gym.make("lab/Go5x5-v0", agent_color="alternate")
    colors = [env.reset(seed=0 if i == 0 else None)[1]["agent_color"] for i in range(4)]
    assert colors == ["black", "white", "black", "white"]
    obs, info = env.reset(seed=5)
    assert info["agent_color"] == "black" and info["opponent_move"] is None
    obs, info = env.reset()
    assert info["agent_color"] == "white" and env.unwrapped.position.move_number == 1
    assert obs[3].sum() == 0


# ---- rendering ------------------------------------------------------------------------------

def test_rgb_array_frame():
    env = gym.make("lab/Go9x9-v0", render_mode="rgb_array")
    env.reset(seed=0)
    empty = env.render()
    w, h = board_pixels(9)
    assert empty.shape == (h, w, 3) and empty.dtype == np.uint8
    env.step(40)
    frame = env.render()
    assert frame.shape == (h, w, 3) and not np.array_equal(frame, empty)
    assert gym.make("lab/Go9x9-v0").metadata["render_fps"] > 0


def test_human_mode_runs_headless():
    env = gym.make("lab/Go5x5-v0", render_mode="human", opponent=lambda p: p.pass_move)
    env.unwrapped.metadata = {**env.unwrapped.metadata, "render_fps": 1000}  # no 4 fps sleeps
    env.reset(seed=0)
    *_, terminated, _, info = env.step(12)
    assert not terminated and env.render() is None
    *_, terminated, _, info = env.step(25)
    assert terminated and info["winner"] == "black"
    env.close()


def test_board_geometry():
    for n in (5, 9, 19):
        for move in (0, n - 1, n * n - 1, n * (n // 2) + 1):
            r, c = divmod(move, n)
            x, y = 40 + c * 40, 40 + (n - 1 - r) * 40
            assert point_at(x + 7, y - 9, n) == move
        assert point_at(2, 2, n) is None
    assert star_points(9) == [(2, 2), (2, 6), (4, 4), (6, 2), (6, 6)]
    assert len(star_points(19)) == 9 and star_points(5) == [(2, 2)]


# ---- sb3-contrib's MaskablePPO ----------------------------------------------------------------

class MaskAudit(gym.Wrapper):
    """Counts steps and checks every action against the mask the agent was shown."""

    def __init__(self, env):
        super().__init__(env)
        self.steps = self.illegal = 0

    def step(self, action):
        self.steps += 1
        self.illegal += not self.env.unwrapped.action_masks()[int(action)]
        return self.env.step(action)

    def action_masks(self):
        return self.env.unwrapped.action_masks()


def _win_rate(model, episodes: int) -> float:
    env = gym.make("lab/Go5x5-v0")
    wins = 0
    for i in range(episodes):
        obs, _ = env.reset(seed=1000 + i)  # the same random opponent games for every model
        done = False
        while not done:
            action, _ = model.predict(obs, action_masks=env.unwrapped.action_masks())
            obs, reward, terminated, truncated, _ = env.step(int(action))
            done = terminated or truncated
        wins += reward > 0
    return wins / episodes


@pytest.mark.slow
def test_maskable_ppo_learns_to_beat_random_and_never_plays_an_illegal_move():
    from sb3_contrib import MaskablePPO

    # illegal_action="raise" (the default): one unmasked illegal move would stop training
    env = MaskAudit(gym.make("lab/Go5x5-v0"))
    model = MaskablePPO("MlpPolicy", env, n_steps=512, batch_size=64, seed=0, device="cpu")
    untrained = _win_rate(model, 150)
    model.learn(8192)
    trained = _win_rate(model, 150)
    assert env.steps >= 8192 and env.illegal == 0
    # about 0.22 -> 0.5 as Black at komi 7.5 (seeds 0-3 measured: +0.21 to +0.35)
    assert trained >= untrained + 0.1, (untrained, trained)
