"""The rollout math against hand-computed values, and against SB3's buffer."""

import numpy as np
import pytest
import torch

from agents.rollout import (
    RolloutBuffer,
    RunningMeanStd,
    discounted_returns,
    explained_variance,
    gae_advantages,
)

GAMMA, LAM = 0.9, 0.8


def col(*xs, dtype=np.float32):
    """A (T, 1) column: T steps of one env."""
    return np.asarray(xs, dtype=dtype)[:, None]


def test_gae_no_episode_end_hand_computed():
    # deltas: 1 + .9*.4 - .5 = .86, 1 + .9*.3 - .4 = .87, 1 + .9*.2 - .3 = .88; carry .72
    adv = gae_advantages(col(1, 1, 1), col(.5, .4, .3), col(.4, .3, .2), col(0, 0, 0, dtype=bool),
                         col(0, 0, 0, dtype=bool), GAMMA, LAM)
    np.testing.assert_allclose(adv[:, 0], [0.86 + 0.72 * 1.5036, 0.87 + 0.72 * 0.88, 0.88],
                               rtol=1e-6)


def test_gae_termination_does_not_bootstrap_nor_carry():
    adv = gae_advantages(col(1, 1, 1), col(.5, .4, .3), col(.4, .3, .2), col(0, 1, 0, dtype=bool),
                         col(0, 0, 0, dtype=bool), GAMMA, LAM)
    # t1: delta = 1 - .4 = .6, nothing from t2; t0: .86 + .72 * .6
    np.testing.assert_allclose(adv[:, 0], [0.86 + 0.72 * 0.6, 0.6, 0.88], rtol=1e-6)


def test_gae_truncation_bootstraps_from_final_value_but_does_not_carry():
    # next_values[1] = 0.3 is V(final obs): delta_1 = 1 + .9 * .3 - .4 = .87, no carry from t2
    adv = gae_advantages(col(1, 1, 5), col(.5, .4, .3), col(.4, .3, .2), col(0, 0, 0, dtype=bool),
                         col(0, 1, 0, dtype=bool), GAMMA, LAM)
    np.testing.assert_allclose(adv[:, 0], [0.86 + 0.72 * 0.87, 0.87, 4.88], rtol=1e-6)


def test_gae_masks_invalid_rows():
    adv = gae_advantages(col(1, 0), col(.5, .4), col(.4, .2), col(1, 0, dtype=bool),
                         col(0, 0, dtype=bool), GAMMA, LAM, valid=col(1, 0, dtype=bool))
    np.testing.assert_allclose(adv[:, 0], [0.5, 0.0])


def test_gae_lambda_one_plus_values_is_the_discounted_return():
    rng = np.random.default_rng(0)
    T, B = 12, 3
    rewards = rng.normal(size=(T, B)).astype(np.float32)
    values = rng.normal(size=(T, B)).astype(np.float32)
    terminated = rng.random((T, B)) < 0.15
    truncated = (rng.random((T, B)) < 0.15) & ~terminated
    # the NEXT_STEP layout: V of the next row, except V(final obs) after an episode end
    next_values = np.concatenate([values[1:], rng.normal(size=(1, B))]).astype(np.float32)
    ends = terminated | truncated
    next_values[ends] = rng.normal(size=ends.sum())
    adv = gae_advantages(rewards, values, next_values, terminated, truncated, GAMMA, 1.0)
    ret = discounted_returns(rewards, next_values, terminated, truncated, GAMMA)
    np.testing.assert_allclose(adv + values, ret, rtol=1e-5, atol=1e-5)


def test_discounted_returns_hand_computed():
    # r = 1, 2, 3, truncated at t1 with V(final) = 10, last bootstrap 4
    ret = discounted_returns(col(1, 2, 3), col(0, 10, 4), col(0, 0, 0, dtype=bool),
                             col(0, 1, 0, dtype=bool), 0.5)
    np.testing.assert_allclose(ret[:, 0], [1 + 0.5 * 7, 2 + 0.5 * 10, 3 + 0.5 * 4])
    ret = discounted_returns(col(1, 2, 3), col(0, 10, 4), col(0, 1, 0, dtype=bool),
                             col(0, 0, 0, dtype=bool), 0.5)
    np.testing.assert_allclose(ret[:, 0], [1 + 0.5 * 2, 2, 3 + 0.5 * 4])


def test_gae_matches_sb3_buffer():
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer as SB3Buffer

    rng = np.random.default_rng(1)
    T, B = 16, 4
    rewards = rng.normal(size=(T, B)).astype(np.float32)
    values = rng.normal(size=(T, B)).astype(np.float32)
    last_values = rng.normal(size=B).astype(np.float32)
    terminated = rng.random((T, B)) < 0.2
    sb3 = SB3Buffer(T, spaces.Box(-1, 1, (1,)), spaces.Discrete(2), gae_lambda=0.95, gamma=0.99,
                    n_envs=B)
    starts = np.concatenate([np.zeros((1, B), bool), terminated[:-1]])  # SB3: done -> next start
    for t in range(T):
        sb3.add(np.zeros((B, 1)), np.zeros((B, 1)), rewards[t], starts[t],
                torch.as_tensor(values[t]), torch.zeros(B))
    sb3.compute_returns_and_advantage(torch.as_tensor(last_values), terminated[-1])
    next_values = np.concatenate([values[1:], last_values[None]])
    adv = gae_advantages(rewards, values, next_values, terminated, np.zeros_like(terminated),
                         0.99, 0.95)
    np.testing.assert_allclose(adv, sb3.advantages, rtol=1e-5, atol=1e-5)


def test_buffer_next_step_layout_bootstraps_truncation_from_the_reset_row():
    """Row 1 truncates; row 2 is NEXT_STEP's reset (its obs is the final one, so values[2] is
    V(final)); row 3 starts the next episode."""
    buf = RolloutBuffer(4, 1, (1,), np.float32, (), np.int64)
    v = [0.5, 0.4, 0.3, 0.2]
    for t, (r, trunc, valid) in enumerate([(1, 0, 1), (1, 1, 1), (0, 0, 0), (1, 0, 1)]):
        buf.add(np.zeros((1, 1)), np.zeros(1), np.zeros(1), np.array([v[t]]),
                np.array([t == 3]))
        buf.record(np.array([r]), np.array([False]), np.array([bool(trunc)]),
                   np.array([bool(valid)]))
    assert buf.full
    buf.compute_advantages(np.array([0.1], np.float32), GAMMA, LAM)
    a3 = 1 + 0.9 * 0.1 - 0.2
    a1 = 1 + 0.9 * 0.3 - 0.4
    a0 = 1 + 0.9 * 0.4 - 0.5 + 0.72 * a1
    np.testing.assert_allclose(buf.advantages[:, 0], [a0, a1, 0.0, a3], rtol=1e-6)
    np.testing.assert_allclose(buf.returns[:, 0], buf.advantages[:, 0] + v, rtol=1e-6)
    view = buf.torch_view(torch.device("cpu"))
    assert view["advantages"].data_ptr() == buf.advantages.ctypes.data  # no copy on CPU


def test_explained_variance():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(y, y) == pytest.approx(1.0)
    assert explained_variance(np.full(4, y.mean()), y) == pytest.approx(0.0)
    assert explained_variance(y[::-1].copy(), y) == pytest.approx(1 - np.var(y - y[::-1]) / 1.25)
    assert np.isnan(explained_variance(y, np.ones(4)))


def test_running_mean_std_matches_numpy():
    rng = np.random.default_rng(2)
    data = rng.normal(3.0, 2.0, size=(100, 2))
    rms = RunningMeanStd((2,), epsilon=1e-12)
    for chunk in np.split(data, [7, 30, 31, 80]):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-9)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-9)
    z = rms.normalize(data)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    assert np.abs(rms.normalize(data * 1e6)).max() == pytest.approx(10.0)  # clipped
    other = RunningMeanStd((2,))
    other.load_state_dict(rms.state_dict())
    np.testing.assert_array_equal(other.mean, rms.mean)
