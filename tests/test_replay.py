"""Replay buffer: n-step returns, PER math against hand-computed values, circular overwrite,
NEXT_STEP reset rows, prioritized sampling frequencies and importance weights."""

import numpy as np
import pytest
import torch

from agents.replay import (
    ReplayBuffer,
    SumTree,
    nstep_return,
    per_probabilities,
    per_weights,
)


def test_nstep_return_hand_values():
    assert nstep_return([1.0, 2.0, 3.0], 0.5) == pytest.approx(1 + 0.5 * 2 + 0.25 * 3)  # 2.75
    assert nstep_return([4.0], 0.9) == pytest.approx(4.0)
    assert nstep_return([], 0.9) == 0.0


def test_per_probabilities_hand_values():
    np.testing.assert_allclose(per_probabilities([1, 2, 3, 4], 1.0), [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(per_probabilities([1, 2, 3, 4], 0.0), [0.25] * 4)
    np.testing.assert_allclose(per_probabilities([1, 4], 0.5), [1 / 3, 2 / 3])


def test_per_weights_hand_values():
    # (N P)^-beta with N = 4, beta = 1: 1/0.4, 1/0.8, 1/1.2, 1/1.6, divided by the max 2.5
    np.testing.assert_allclose(per_weights([0.1, 0.2, 0.3, 0.4], 4, 1.0),
                               [1.0, 0.5, 1 / 3, 0.25])
    np.testing.assert_allclose(per_weights([0.1, 0.2, 0.3, 0.4], 4, 0.0), [1.0] * 4)
    # beta = 0.5: (0.4)^-0.5 / (0.4)^-0.5 = 1, (1.6)^-0.5 / (0.4)^-0.5 = 0.5
    np.testing.assert_allclose(per_weights([0.1, 0.4], 4, 0.5)[1], 0.5)


def _step(buf, obs, action, reward, next_obs, terminated=False, truncated=False, valid=True):
    buf.add(np.array([[obs]], dtype=np.float32), np.array([action]),
            np.array([reward], dtype=np.float32), np.array([[next_obs]], dtype=np.float32),
            np.array([terminated]), np.array([truncated]), np.array([valid]))


def test_circular_overwrite():
    buf = ReplayBuffer(3, (1,), np.float32, gamma=0.9)
    for i in range(5):
        _step(buf, i, i % 2, float(i), i + 1)
    assert len(buf) == 3 and buf.pos == 2
    assert buf.rewards.tolist() == [3.0, 4.0, 2.0]  # rows 0 and 1 overwritten by steps 3, 4
    assert buf.obs[:, 0].tolist() == [3.0, 4.0, 2.0]
    assert buf.next_obs[:, 0].tolist() == [4.0, 5.0, 3.0]
    assert buf.actions.tolist() == [1, 0, 0]
    np.testing.assert_allclose(buf.discounts.numpy(), [0.9] * 3)


def test_multi_env_rows_wrap_and_invalid_rows_are_skipped():
    buf = ReplayBuffer(4, (1,), np.float32)
    obs = np.arange(3, dtype=np.float32)[:, None]
    for t in range(2):
        buf.add(obs + 10 * t, np.array([0, 1, 0]), np.array([t, t, t], dtype=np.float32),
                obs + 10 * t + 1, np.zeros(3, bool), np.zeros(3, bool),
                np.array([True, t == 0, True]))  # env 1 only resets on step 1
    # step 0 fills rows 0-2; step 1 writes env 0 to row 3 and env 2 wraps around to row 0
    assert len(buf) == 4 and buf.pos == 1
    assert buf.obs[:, 0].tolist() == [12.0, 1.0, 2.0, 10.0]


def test_terminated_is_done_but_truncated_bootstraps():
    buf = ReplayBuffer(4, (1,), np.float32)
    _step(buf, 0, 0, 1.0, 1, terminated=True)
    _step(buf, 1, 0, 1.0, 2, truncated=True)
    _step(buf, 2, 0, 0.0, 3, valid=False)  # the NEXT_STEP reset row
    assert len(buf) == 2
    assert buf.dones[:2].tolist() == [1.0, 0.0]
    assert buf.next_obs[1, 0].item() == 2.0  # the true final obs of the truncated episode


def test_nstep_transitions_hand_values():
    gamma = 0.5
    buf = ReplayBuffer(10, (1,), np.float32, n_step=3, gamma=gamma)
    for t, r in enumerate([1.0, 2.0, 3.0]):
        _step(buf, t, t % 2, r, t + 1)
    assert len(buf) == 1  # s0 has its 3 rewards now
    _step(buf, 3, 1, 4.0, 4, terminated=True)  # ends: s1, s2, s3 are flushed
    assert len(buf) == 4
    assert buf.obs[:4, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert buf.actions[:4].tolist() == [0, 1, 0, 1]
    np.testing.assert_allclose(buf.rewards[:4].numpy(),
                               [1 + 1 + 0.75, 2 + 1.5 + 1.0, 3 + 2.0, 4.0])
    assert buf.next_obs[:4, 0].tolist() == [3.0, 4.0, 4.0, 4.0]
    assert buf.dones[:4].tolist() == [0.0, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(buf.discounts[:4].numpy(), [0.125, 0.125, 0.25, 0.5])


def test_nstep_truncation_bootstraps_and_envs_are_separate():
    buf = ReplayBuffer(10, (1,), np.float32, num_envs=2, n_step=2, gamma=0.5)
    ones, zeros = np.ones(2, bool), np.zeros(2, bool)
    buf.add(np.array([[0.0], [100.0]], np.float32), np.array([0, 1]),
            np.array([1.0, 10.0], np.float32), np.array([[1.0], [101.0]], np.float32),
            zeros, zeros, ones)
    assert len(buf) == 0
    buf.add(np.array([[1.0], [101.0]], np.float32), np.array([1, 0]),
            np.array([2.0, 20.0], np.float32), np.array([[2.0], [102.0]], np.float32),
            zeros, np.array([True, False]), ones)
    # env 0 truncated: s0 (2 rewards) and s1 (1 reward), both bootstrap from obs 2;
    # env 1 emits s100 with its 2 rewards.
    assert len(buf) == 3
    rows = sorted(zip(buf.obs[:3, 0].tolist(), buf.rewards[:3].tolist(),
                      buf.next_obs[:3, 0].tolist(), buf.dones[:3].tolist(),
                      buf.discounts[:3].tolist(), strict=True))
    assert rows == [(0.0, 2.0, 2.0, 0.0, 0.25), (1.0, 2.0, 2.0, 0.0, 0.5),
                    (100.0, 20.0, 102.0, 0.0, 0.25)]


def test_uniform_sample_only_written_rows():
    buf = ReplayBuffer(100, (1,), np.float32)
    for i in range(3):
        _step(buf, i, 0, float(i), i + 1)
    g = torch.Generator().manual_seed(0)
    batch = buf.sample(1000, g)
    assert set(batch.obs[:, 0].tolist()) == {0.0, 1.0, 2.0}
    assert torch.equal(batch.next_obs, batch.obs + 1)
    assert batch.weights is None and batch.indices is None


def test_sum_tree_find_hand_values():
    tree = SumTree(4)
    tree.update(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    assert tree.total == 10.0
    found = tree.find(np.array([0.0, 0.99, 1.0, 2.9, 3.0, 5.99, 6.0, 9.99]))
    assert found.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    tree.update(np.array([1, 1]), np.array([5.0, 5.0]))  # repeated index
    assert tree.total == 13.0


def test_prioritized_sampling_is_proportional_with_importance_weights():
    buf = ReplayBuffer(8, (1,), np.float32, prioritized=True, alpha=1.0, priority_eps=0.0)
    for i in range(4):
        _step(buf, i, 0, 0.0, i + 1)
    buf.update_priorities(torch.arange(4), torch.tensor([1.0, -2.0, 3.0, 4.0]))  # |td|
    rng = np.random.default_rng(0)
    counts = np.zeros(4)
    for _ in range(500):
        batch = buf.sample_prioritized(64, 1.0, rng)
        counts += np.bincount(batch.indices.numpy(), minlength=4)
    np.testing.assert_allclose(counts / counts.sum(), [0.1, 0.2, 0.3, 0.4], atol=0.01)
    # weights: (N P)^-1 normalised by the batch max; this batch holds every row
    batch = buf.sample_prioritized(64, 1.0, rng)
    expected = {0: 1.0, 1: 0.5, 2: 1 / 3, 3: 0.25}
    for i, w in zip(batch.indices.tolist(), batch.weights.tolist(), strict=True):
        assert w == pytest.approx(expected[i], rel=1e-5)


def test_new_transitions_get_the_max_priority():
    buf = ReplayBuffer(8, (1,), np.float32, prioritized=True, alpha=0.5, priority_eps=0.0)
    _step(buf, 0, 0, 0.0, 1)
    buf.update_priorities(torch.tensor([0]), torch.tensor([9.0]))
    _step(buf, 1, 0, 0.0, 2)
    np.testing.assert_allclose(buf.tree.leaves(np.array([0, 1])), [3.0, 3.0])  # 9 ** 0.5


@pytest.mark.parametrize("prioritized", [False, True])
def test_state_dict_round_trip(prioritized):
    buf = ReplayBuffer(5, (2,), np.float32, prioritized=prioritized)
    for i in range(7):
        buf.add(np.full((1, 2), i, np.float32), np.array([i % 3]), np.array([i], np.float32),
                np.full((1, 2), i + 1, np.float32), np.array([i == 4]), np.array([False]),
                np.array([True]))
    if prioritized:
        buf.update_priorities(torch.tensor([1, 2]), torch.tensor([0.5, 7.0]))
    state = buf.state_dict()
    assert state["obs"].shape == (5, 2)
    other = ReplayBuffer(5, (2,), np.float32, prioritized=prioritized)
    other.load_state_dict(state)
    assert (other.pos, other.size) == (buf.pos, buf.size)
    for f in ("obs", "actions", "rewards", "next_obs", "dones", "discounts"):
        assert torch.equal(getattr(other, f), getattr(buf, f))
    if prioritized:
        np.testing.assert_allclose(other.tree.nodes, buf.tree.nodes)
        assert other.max_priority == buf.max_priority
