"""The on-policy rollout: T steps of B envs, and the return / advantage math A2C and PPO share.

Layout (Gymnasium's NEXT_STEP autoreset, see ``agents.common.EpisodeTracker``). Row ``t`` holds
the observation the policy acted on, its action, log-probability and value V(s_t), then what
the env answered: reward, terminated, truncated, and ``valid`` (False when step ``t`` was only
the reset of an episode that ended at step ``t - 1``: reward 0, no transition). The observation
an env returns at step ``t`` is the one row ``t + 1`` acts on; when step ``t`` ended an episode
that observation is the episode's true final one, so ``values[t + 1]`` is V(s_final): exactly
the bootstrap a truncated episode needs, with no extra forward pass. Row ``t + 1`` (the reset
step) is invalid and masked out of every loss; the first observation of the new episode is in
row ``t + 2``, which is where ``episode_starts`` is True (an LSTM zeroes its memory there).

All arrays are numpy (what the env speaks); on CPU, ``torch_view`` shares their memory, so the
update reads them without a copy.
"""

from __future__ import annotations

import numpy as np
import torch


def gae_advantages(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
                   terminated: np.ndarray, truncated: np.ndarray, gamma: float,
                   gae_lambda: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Generalized advantage estimation (Schulman et al. 2016), arrays ``(T, ...)``.

    ``next_values[t]`` is V of the observation step ``t`` returned (V(s_final) when the
    episode ended there). With done = terminated or truncated:

        delta_t = r_t + gamma * (1 - terminated_t) * next_values[t] - values[t]
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}

    so termination does not bootstrap, truncation bootstraps from V(s_final) and neither lets
    the next episode's advantages leak back. The last row bootstraps from ``next_values[-1]``.
    Rows where ``valid`` is False (NEXT_STEP reset steps) come out as 0.
    """
    not_terminated = 1.0 - np.asarray(terminated, dtype=np.float32)
    carry = gamma * gae_lambda * (1.0 - np.logical_or(terminated, truncated).astype(np.float32))
    deltas = rewards + gamma * not_terminated * next_values - values
    advantages = np.zeros_like(deltas, dtype=np.float32)
    last = np.zeros_like(deltas[0], dtype=np.float32)
    for t in range(len(deltas) - 1, -1, -1):
        last = deltas[t] + carry[t] * last
        advantages[t] = last
    if valid is not None:
        advantages *= valid
    return advantages


def discounted_returns(rewards: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
                       truncated: np.ndarray, gamma: float) -> np.ndarray:
    """Bootstrapped discounted returns G_t = r_t + gamma * G_{t+1}, arrays ``(T, ...)``.

    G_{t+1} is replaced by 0 after a termination and by ``next_values[t]`` (V(s_final)) after a
    truncation and at the last row. Equals ``gae_advantages(..., gae_lambda=1) + values``.
    """
    returns = np.zeros_like(rewards, dtype=np.float32)
    following = next_values[-1]
    for t in range(len(rewards) - 1, -1, -1):
        following = np.where(truncated[t] | (t == len(rewards) - 1), next_values[t], following)
        following = rewards[t] + gamma * np.where(terminated[t], 0.0, following)
        returns[t] = following
    return returns


def explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    """1 - Var[target - predicted] / Var[target]: 1 is perfect, 0 no better than the mean,
    negative worse; NaN when the target is constant (SB3's convention)."""
    var_target = np.var(target)
    return float("nan") if var_target == 0 else float(1.0 - np.var(target - predicted) / var_target)


class RunningMeanStd:
    """Running mean and variance of a stream of batches (Chan et al.'s parallel update), as in
    SB3's VecNormalize: ``normalize(x) = clip((x - mean) / sqrt(var + eps), -clip, clip)``."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = float(epsilon)

    def update(self, batch: np.ndarray) -> None:
        if len(batch) == 0:
            return
        b_mean, b_var, b_count = batch.mean(axis=0), batch.var(axis=0), len(batch)
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var = m2 / total
        self.count = total

    def normalize(self, x: np.ndarray, clip: float = 10.0, eps: float = 1e-8) -> np.ndarray:
        return np.clip((x - self.mean) / np.sqrt(self.var + eps), -clip, clip).astype(np.float32)

    def scale(self, x: np.ndarray, clip: float = 10.0, eps: float = 1e-8) -> np.ndarray:
        """``x / sqrt(var + eps)``, clipped: VecNormalize's reward scaling (no centring)."""
        return np.clip(x / np.sqrt(self.var + eps), -clip, clip).astype(np.float32)

    def state_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.var = np.asarray(state["var"], dtype=np.float64)
        self.count = float(state["count"])


class RolloutBuffer:
    """``n_steps`` x ``n_envs`` arrays filled one vector step at a time (``add`` then ``record``),
    then ``compute_advantages``; ``reset`` starts the next rollout."""

    def __init__(self, n_steps: int, n_envs: int, obs_shape: tuple[int, ...], obs_dtype,
                 action_shape: tuple[int, ...], action_dtype):
        shape = (n_steps, n_envs)
        self.n_steps, self.n_envs = n_steps, n_envs
        self.obs = np.zeros(shape + tuple(obs_shape), dtype=obs_dtype)
        self.actions = np.zeros(shape + tuple(action_shape), dtype=action_dtype)
        self.log_probs = np.zeros(shape, dtype=np.float32)
        self.values = np.zeros(shape, dtype=np.float32)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.terminated = np.zeros(shape, dtype=bool)
        self.truncated = np.zeros(shape, dtype=bool)
        self.valid = np.zeros(shape, dtype=bool)
        self.episode_starts = np.zeros(shape, dtype=bool)
        self.advantages = np.zeros(shape, dtype=np.float32)
        self.returns = np.zeros(shape, dtype=np.float32)
        self.step = 0

    @property
    def full(self) -> bool:
        return self.step == self.n_steps

    def reset(self) -> None:
        self.step = 0

    def add(self, obs: np.ndarray, actions: np.ndarray, log_probs: np.ndarray,
            values: np.ndarray, episode_starts: np.ndarray) -> None:
        """What the policy saw and did at the current step."""
        t = self.step
        self.obs[t] = obs
        self.actions[t] = actions
        self.log_probs[t] = log_probs
        self.values[t] = values
        self.episode_starts[t] = episode_starts

    def record(self, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
               valid: np.ndarray) -> None:
        """What the env answered at the current step; moves to the next one."""
        t = self.step
        self.rewards[t] = rewards
        self.terminated[t] = terminated
        self.truncated[t] = truncated
        self.valid[t] = valid
        self.step += 1

    def compute_advantages(self, last_values: np.ndarray, gamma: float,
                           gae_lambda: float) -> None:
        """GAE advantages and lambda-returns (advantages + values, the value target);
        ``last_values`` is V of the observation after the last step."""
        next_values = np.concatenate([self.values[1:], last_values[None]])
        self.advantages[:] = gae_advantages(self.rewards, self.values, next_values,
                                            self.terminated, self.truncated, gamma, gae_lambda,
                                            self.valid)
        self.returns[:] = self.advantages + self.values

    def torch_view(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The arrays the update needs, as tensors (shared memory on CPU)."""
        names = ("obs", "actions", "log_probs", "values", "advantages", "returns", "valid",
                 "episode_starts")
        return {name: torch.from_numpy(getattr(self, name)).to(device) for name in names}
