"""lab/GridWorld-v0 and lab/CartPolePOMDP-v0: API checkers, model, rendering, hidden velocities."""

import importlib
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs.gridworld import GridWorldEnv, build_model
from envs.pomdp import make_cartpole_pomdp

GRID, POMDP = "lab/GridWorld-v0", "lab/CartPolePOMDP-v0"


def _checker_warnings(fn) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught]


# ---- registration ---------------------------------------------------------------------------

def test_ids_registered_once_and_reimport_is_harmless():
    assert gym.spec(GRID).max_episode_steps == 100
    spec = gym.spec(POMDP)
    assert spec.max_episode_steps == 500 and spec.vector_entry_point is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a re-registration would warn "Overriding environment"
        importlib.reload(envs)
    assert gym.spec(GRID).entry_point == "envs.gridworld:GridWorldEnv"


def test_envs_package_imports_no_torch_or_lab():
    import subprocess

    code = ("import sys, envs, envs.gridworld, envs.pomdp, gymnasium as gym; "
            "gym.make('lab/GridWorld-v0'); gym.make('lab/CartPolePOMDP-v0'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'lab', 'agents', 'generative')]; print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# ---- the API checkers -----------------------------------------------------------------------

@pytest.mark.parametrize("render_mode", [None, "rgb_array"])
def test_gridworld_passes_gymnasium_and_sb3_checkers(render_mode):
    raw = gym.make(GRID, render_mode=render_mode).unwrapped
    assert _checker_warnings(lambda: check_env(raw)) == []
    assert _checker_warnings(lambda: sb3_check_env(gym.make(GRID, render_mode=render_mode))) == []


@pytest.mark.parametrize("render_mode", [None, "rgb_array"])
def test_cartpole_pomdp_passes_gymnasium_and_sb3_checkers(render_mode):
    env = gym.make(POMDP, render_mode=render_mode)
    # the env is a wrapper around CartPoleEnv, so gymnasium notes that it is not "unwrapped":
    # that remark is the only one allowed.
    left = [w for w in _checker_warnings(lambda: check_env(env))
            if "different from the unwrapped version" not in w]
    assert left == []
    assert _checker_warnings(lambda: sb3_check_env(gym.make(POMDP, render_mode=render_mode))) == []


def test_step_types_are_what_sb3_wants():
    for env_id in (GRID, POMDP):
        env = gym.make(env_id)
        env.reset(seed=0)
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert type(reward) is float and type(terminated) is bool and type(truncated) is bool


# ---- GridWorld's model ----------------------------------------------------------------------

def test_gridworld_model_shapes_and_stochastic_rows():
    P, R, terminal = gym.make(GRID).unwrapped.transition_model()
    assert P.shape == (11, 4, 11) and R.shape == (11, 4) and terminal.shape == (11,)
    np.testing.assert_allclose(P.sum(axis=2), 1.0)
    assert terminal.sum() == 2
    # terminal states are absorbing with zero reward
    for t in np.flatnonzero(terminal):
        np.testing.assert_array_equal(P[t, :, t], 1.0)
        np.testing.assert_array_equal(R[t], 0.0)


def test_gridworld_model_by_hand():
    # 4x3 map, states row-major without the wall: 0 1 2 3(G) / 4 _ 5 6(P) / 7(S) 8 9 10
    env = GridWorldEnv(slip=0.2, step_reward=-0.04)
    P, R, _ = env.transition_model()
    # from the start (7) going up: 0.8 to 4, 0.1 left into the edge (stay), 0.1 right to 8
    assert P[7, 0, 4] == pytest.approx(0.8)
    assert P[7, 0, 7] == pytest.approx(0.1)
    assert P[7, 0, 8] == pytest.approx(0.1)
    # from 5 (left of the pit) going right: 0.8 into the pit, 0.1 up to 2, 0.1 down to 9
    assert P[5, 1, 6] == pytest.approx(0.8)
    assert P[5, 1, 2] == pytest.approx(0.1) and P[5, 1, 9] == pytest.approx(0.1)
    assert R[5, 1] == pytest.approx(0.8 * -1.0 + 0.2 * -0.04)
    # from 2 going right: 0.8 into the goal, 0.1 up (edge: stay), 0.1 down to 5
    assert R[2, 1] == pytest.approx(0.8 * 1.0 + 0.2 * -0.04)
    # from 4 going right bumps into the wall: stays with 0.8, slips up to 0 / down to 7
    assert P[4, 1, 4] == pytest.approx(0.8)
    assert P[4, 1, 0] == pytest.approx(0.1) and P[4, 1, 7] == pytest.approx(0.1)


def test_gridworld_samples_follow_its_model():
    env = GridWorldEnv(slip=0.2)
    P, _, _ = env.transition_model()
    env.reset(seed=0)
    counts = np.zeros(11)
    for _ in range(20_000):
        env.state = 5
        s2, *_ = env.step(1)
        counts[s2] += 1
    np.testing.assert_allclose(counts / counts.sum(), P[5, 1], atol=0.015)


def test_gridworld_episode_ends_on_goal_and_on_time_limit():
    env = gym.make(GRID, slip=0.0)
    s, _ = env.reset(seed=0)
    total, steps, terminated = 0.0, 0, False
    for a in (0, 0, 1, 1, 1):  # up, up, right, right, right: the goal
        s, r, terminated, truncated, _ = env.step(a)
        total, steps = total + r, steps + 1
    assert terminated and s == 3 and total == pytest.approx(1.0 - 4 * 0.04)
    env.reset(seed=0)
    for step in range(1, 101):  # bumping into the left edge forever: truncated at 100
        _, _, terminated, truncated, _ = env.step(3)
        assert not terminated and truncated == (step == 100)


def test_gridworld_custom_grid_and_bad_arguments():
    model, reward_into, cells = build_model(("SG",), 0.0, -1.0, 5.0, -5.0)
    np.testing.assert_allclose(model.P[0, 1], [0.0, 1.0])
    assert model.R[0, 1] == 5.0 and cells == [(0, 0), (0, 1)]
    with pytest.raises(ValueError, match="slip"):
        GridWorldEnv(slip=1.5)
    with pytest.raises(ValueError, match="map_name"):
        GridWorldEnv(map_name="9x9")
    with pytest.raises(ValueError, match="start"):
        GridWorldEnv(grid=["..G"])


def test_gridworld_random_start_visits_every_nonterminal_state():
    env = GridWorldEnv(random_start=True)
    starts = {int(env.reset(seed=i)[0]) for i in range(200)}
    assert starts == set(np.flatnonzero(~env.model.terminal).tolist())


# ---- rendering ------------------------------------------------------------------------------

def test_gridworld_rgb_array_frame():
    env = gym.make(GRID, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (300, 400, 3) and frame.dtype == np.uint8
    # the agent (blue) is drawn in the start cell, bottom-left
    assert tuple(frame[250, 50]) == (40, 90, 200)
    env.step(1)
    assert env.render().shape == (300, 400, 3)
    env.close()
    env4 = gym.make(GRID, render_mode="rgb_array", map_name="4x4")
    env4.reset(seed=0)
    assert env4.render().shape == (400, 400, 3)


def test_gridworld_human_mode_runs_headless():
    env = gym.make(GRID, render_mode="human")
    env.reset(seed=0)
    assert env.render() is None
    env.step(0)
    env.close()


def test_pomdp_rgb_array_passes_through():
    env = gym.make(POMDP, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (400, 600, 3) and frame.dtype == np.uint8
    vec = gym.make_vec(POMDP, num_envs=3, vectorization_mode="vector_entry_point",
                       render_mode="rgb_array")
    vec.reset(seed=0)
    frames = vec.render()
    assert len(frames) == 3 and frames[0].shape == (400, 600, 3) and frames[0].dtype == np.uint8
    vec.close()


# ---- the POMDP hides velocities -------------------------------------------------------------

def test_pomdp_observation_is_x_and_theta_of_the_state():
    env = gym.make(POMDP)
    assert env.observation_space.shape == (2,)
    obs, _ = env.reset(seed=0)
    for _ in range(50):
        state = np.asarray(env.unwrapped.state, dtype=np.float32)
        np.testing.assert_array_equal(obs, state[[0, 2]])
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()


def test_pomdp_vector_env_hides_velocities_and_autoresets_next_step():
    vec = gym.make_vec(POMDP, num_envs=8, vectorization_mode="vector_entry_point")
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    assert vec.single_observation_space.shape == (2,) and vec.observation_space.shape == (8, 2)
    obs, _ = vec.reset(seed=0)
    ended = np.zeros(8, dtype=bool)
    saw_reset_step = False
    for _ in range(300):
        np.testing.assert_array_equal(obs, vec.unwrapped.state[[0, 2]].T.astype(np.float32))
        obs, reward, terminated, truncated, _ = vec.step(vec.action_space.sample())
        # the step after an episode ended is the reset: reward 0, nothing ends
        assert np.all(reward[ended] == 0.0) and not np.any((terminated | truncated)[ended])
        saw_reset_step |= ended.any()
        ended = terminated | truncated
    assert saw_reset_step


def test_pomdp_vector_env_matches_single_env_dynamics():
    # same start state and actions: same [x, theta] trajectory as the single env
    single = make_cartpole_pomdp()
    single.reset(seed=0)
    vec = gym.make_vec(POMDP, num_envs=1, vectorization_mode="vector_entry_point")
    vec.reset(seed=0)
    vec.unwrapped.state = np.asarray(single.unwrapped.state, dtype=np.float64)[:, None].copy()
    for a in [0, 1, 1, 0, 1, 0, 0, 1]:
        o1, *_ = single.step(a)
        o2, *_ = vec.step(np.array([a]))
        np.testing.assert_allclose(o2[0], o1, rtol=1e-5, atol=1e-6)
