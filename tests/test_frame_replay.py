"""The frame-storing replay buffer returns exactly what the naive one does (stacked observations,
next observations, every field and the same sampled batches) over random episodes of a
NEXT_STEP-autoreset vector env with terminations, truncations, zero and repeated frames, both
padding kinds, n-step returns and ring wrap-around; drops (never corrupts) transitions when its
frame ring runs short; checkpoints; and DQN trains identically on either."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.wrappers import FrameStackObservation

from agents.common import EpisodeTracker
from agents.frame_replay import FrameReplayBuffer
from agents.replay import ReplayBuffer

FRAME = (6, 5)


class FlickerEnv(gym.Env):
    """Random uint8 frames (one in ten all zero, one in ten repeating the last), random
    terminations and truncations; the reward is the action."""

    def __init__(self, frame=FRAME, end_prob=0.08, truncate_prob=0.03):
        self.frame, self.end_prob, self.truncate_prob = frame, end_prob, truncate_prob
        self.observation_space = spaces.Box(0, 255, frame, np.uint8)
        self.action_space = spaces.Discrete(3)
        self._last = np.zeros(frame, np.uint8)

    def _new_frame(self) -> np.ndarray:
        u = self.np_random.random()
        if u < 0.1:
            self._last = np.zeros(self.frame, np.uint8)
        elif u >= 0.2:
            self._last = self.np_random.integers(0, 256, self.frame, dtype=np.uint8)
        return self._last.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._new_frame(), {}

    def step(self, action):
        u = self.np_random.random()
        terminated = bool(u < self.end_prob)
        truncated = bool(self.end_prob <= u < self.end_prob + self.truncate_prob)
        return self._new_frame(), float(action), terminated, truncated, {}


def stacked_vec_env(num_envs: int, padding: str, **kwargs):
    return gym.vector.SyncVectorEnv(
        [lambda: FrameStackObservation(FlickerEnv(**kwargs), 4, padding_type=padding)]
        * num_envs)


def feed(buffers, env, steps: int, seed: int = 0, check=None):
    """Drive ``env`` with random actions, adding every step to each buffer as DQN does."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    tracker = EpisodeTracker(env.num_envs)
    for _ in range(steps):
        actions = rng.integers(3, size=env.num_envs)
        next_obs, rewards, terminated, truncated, _ = env.step(actions)
        tracker.step(rewards, terminated, truncated)
        for buf in buffers:
            buf.add(obs, actions, rewards, next_obs, terminated, truncated, tracker.valid)
        obs = next_obs
        if check is not None:
            check()


def assert_same_rows(frames: FrameReplayBuffer, naive: ReplayBuffer) -> None:
    assert len(frames) == len(naive)
    rows = np.arange(len(naive))
    np.testing.assert_array_equal(frames.frames[frames.obs_slots[rows]], naive.obs[rows].numpy())
    np.testing.assert_array_equal(frames.frames[frames.next_slots[rows]],
                                  naive.next_obs[rows].numpy())
    for name in ("actions", "rewards", "dones", "discounts"):
        np.testing.assert_array_equal(getattr(frames, name)[rows],
                                      getattr(naive, name)[rows].numpy(), err_msg=name)


def assert_same_batches(frames: FrameReplayBuffer, naive: ReplayBuffer, seed: int = 0) -> None:
    a = frames.sample(64, torch.Generator().manual_seed(seed))
    b = naive.sample(64, torch.Generator().manual_seed(seed))
    for name in ("obs", "actions", "rewards", "next_obs", "dones", "discounts"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name


@pytest.mark.parametrize("padding", ["zero", "reset"])
@pytest.mark.parametrize("n_step", [1, 3])
def test_same_transitions_and_batches_as_the_naive_buffer(padding, n_step):
    shape = (4, *FRAME)
    naive = ReplayBuffer(97, shape, np.uint8, num_envs=3, n_step=n_step, gamma=0.9)
    frames = FrameReplayBuffer(97, shape, np.uint8, num_envs=3, n_step=n_step, gamma=0.9,
                               frame_capacity=500)  # enough that nothing is dropped here
    checked = []

    def check():
        if len(checked) % 37 == 0:  # every so often while filling and wrapping
            assert_same_rows(frames, naive)
        checked.append(1)

    feed([naive, frames], stacked_vec_env(3, padding), 600, check=check)
    assert naive.size == 97 and frames.added > 3 * 97  # the ring came round more than twice
    assert frames.frames_written > frames.frame_capacity  # and so did the frame ring
    assert_same_rows(frames, naive)
    assert_same_batches(frames, naive)


def test_frames_are_stored_once():
    """Long episodes: one new frame per transition, a few more for each episode's start."""
    shape = (4, *FRAME)
    frames = FrameReplayBuffer(1000, shape, np.uint8, num_envs=2)
    feed([frames], stacked_vec_env(2, "zero", end_prob=0.005, truncate_prob=0.0), 300)
    assert frames.added == len(frames) >= 590
    # at most one frame per transition (zero frames take none) and 4 per episode start
    assert frames.frames_written <= frames.added + 4 * 10
    naive_bytes = 2 * frames.capacity * int(np.prod(shape))
    frame_bytes = frames.frames.nbytes
    assert frame_bytes < naive_bytes / 7  # 8 frames per transition -> ~1.03 plus the margin


def test_a_short_frame_ring_drops_old_transitions_and_never_returns_overwritten_frames():
    shape = (4, *FRAME)
    naive = ReplayBuffer(200, shape, np.uint8, num_envs=2)
    frames = FrameReplayBuffer(200, shape, np.uint8, num_envs=2, frame_capacity=150)
    # episodes of about 3 steps: several frames per transition, more than the ring holds
    feed([naive, frames], stacked_vec_env(2, "reset", end_prob=0.3), 300)
    assert 0 < len(frames) < len(naive) == 200
    live = np.arange(frames.first, frames.added) % frames.capacity  # the rows still held
    np.testing.assert_array_equal(frames.frames[frames.obs_slots[live]], naive.obs[live].numpy())
    np.testing.assert_array_equal(frames.frames[frames.next_slots[live]],
                                  naive.next_obs[live].numpy())
    batch = frames.sample(500, torch.Generator().manual_seed(1))
    held = {frames.frames[frames.obs_slots[r]].tobytes() for r in live}
    assert {o.numpy().tobytes() for o in batch.obs} <= held


def test_prioritized_sampling_returns_the_stored_observations():
    shape = (4, *FRAME)
    naive = ReplayBuffer(64, shape, np.uint8, num_envs=2, prioritized=True)
    frames = FrameReplayBuffer(64, shape, np.uint8, num_envs=2, prioritized=True)
    feed([naive, frames], stacked_vec_env(2, "zero"), 100)
    a = frames.sample_prioritized(32, 0.4, np.random.default_rng(3))
    b = naive.sample_prioritized(32, 0.4, np.random.default_rng(3))
    assert torch.equal(a.indices, b.indices) and torch.allclose(a.weights, b.weights)
    assert torch.equal(a.obs, b.obs) and torch.equal(a.next_obs, b.next_obs)
    frames.update_priorities(a.indices, torch.linspace(0, 5, 32))
    assert frames.max_priority == pytest.approx(5.0, abs=1e-5)


def test_checkpoint_round_trip_gives_the_same_batches():
    shape = (4, *FRAME)
    frames = FrameReplayBuffer(50, shape, np.uint8, num_envs=2, n_step=2)
    feed([frames], stacked_vec_env(2, "zero"), 80)
    state = frames.state_dict()
    back = FrameReplayBuffer(50, shape, np.uint8, num_envs=2, n_step=2)
    back.load_state_dict(state)
    assert len(back) == len(frames)
    a = frames.sample(40, torch.Generator().manual_seed(5))
    b = back.sample(40, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a[:6], b[:6], strict=True))
    with pytest.raises(ValueError, match="another capacity"):
        FrameReplayBuffer(60, shape, np.uint8, num_envs=2, n_step=2).load_state_dict(state)


# ---- DQN on either buffer -------------------------------------------------------------------

STACKED_ID = "test/FlickerStack-v0"


def make_flicker_stack(**kwargs):
    return FrameStackObservation(FlickerEnv(frame=(10, 10), end_prob=0.03, truncate_prob=0.01),
                                 4, padding_type="zero")


def test_dqn_picks_the_frame_buffer_for_stacked_frames_and_learns_the_same_on_both():
    from agents.dqn import DQN, DQNConfig
    from lab.spec import EnvSpec

    if STACKED_ID not in gym.registry:
        gym.register(STACKED_ID, entry_point=make_flicker_stack)
    env_spec = EnvSpec(id=STACKED_ID, num_envs=2)
    config = dict(network={"type": "minatar_cnn"}, buffer_size=150, learning_starts=40,
                  batch_size=16, train_freq=2, target_update_interval=20)

    class Log:
        def log(self, metrics, step):
            pass

    agents = {}
    for frames in (None, False):
        agent = DQN(DQNConfig(frame_replay=frames, **config), env_spec, seed=3)
        agent.learn(300, Log())
        agents[frames] = agent
    assert isinstance(agents[None].buffer, FrameReplayBuffer)
    assert isinstance(agents[False].buffer, ReplayBuffer)
    assert agents[None].n_updates == agents[False].n_updates > 0
    for p, q in zip(agents[None].q_net.parameters(), agents[False].q_net.parameters(),
                    strict=True):
        assert torch.equal(p, q)
