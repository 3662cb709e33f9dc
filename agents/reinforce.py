"""REINFORCE (Williams 1992) with reward-to-go and a learned state-value baseline.

One update reads top to bottom:

1. Step the vector env with the current policy and keep each env's running episode. An episode
   that ends (terminated or truncated) goes into the batch; an episode still running when the
   update comes is kept and finished later (its first steps come from the previous policy).
2. When ``episodes_per_update`` episodes are finished, compute for every step the discounted
   reward-to-go G_t = r_t + gamma r_{t+1} + ...; an episode cut by the time limit (truncated)
   bootstraps its tail with V(s_T), a terminated one does not.
3. Advantage A_t = G_t - V(s_t) (or G_t when ``baseline`` is off), optionally standardized over
   the batch; the policy loss is -mean(log pi(a_t|s_t) A_t) - ent_coef * entropy, the value
   net regresses V(s_t) on G_t with a mean squared error. One gradient step on the sum.

NEXT_STEP autoreset: the step right after an episode ended is only the reset (EpisodeTracker's
``valid`` is False there) and is not recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from agents.common import EpisodeTracker, log_episodes, make_env, make_vec_env, resolve_device
from lab.backbone import (
    CategoricalHead,
    GaussianHead,
    NetworkSpec,
    OptimizerSpec,
    ValueHead,
    build_body,
    build_optimizer,
)
from lab.backbone.specs import MLPSpec
from lab.checkpoint import check_finite

# ---- the math ---------------------------------------------------------------------------------


def reward_to_go(rewards: np.ndarray, gamma: float, bootstrap: float = 0.0) -> np.ndarray:
    """G_t = r_t + gamma G_{t+1}, with G_T = ``bootstrap`` (V(s_T) after a truncation, else 0)."""
    out = np.zeros(len(rewards), dtype=np.float64)
    running = float(bootstrap)
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * running
        out[t] = running
    return out


def standardize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps); a batch of one is only centred."""
    if x.numel() < 2:
        return x - x.mean()
    return (x - x.mean()) / (x.std() + eps)


def policy_gradient_loss(log_probs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-mean_t log pi(a_t|s_t) A_t: its gradient is the (batch-averaged) policy gradient."""
    return -(log_probs * advantages.detach()).mean()


# ---- the agent --------------------------------------------------------------------------------


class ReinforceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algo: Literal["reinforce"] = "reinforce"
    lr: float = Field(1e-3, gt=0)
    gamma: float = Field(0.99, ge=0.0, le=1.0)
    episodes_per_update: int = Field(8, ge=1)  # finished episodes in one policy-gradient batch
    baseline: bool = True  # advantage = reward-to-go - V(s); off: advantage = reward-to-go
    # Standardize the advantages over the batch (with baseline off: the classic normalized
    # returns of REINFORCE).
    normalize_advantages: bool = True
    ent_coef: float = Field(0.0, ge=0.0)
    vf_coef: float = Field(0.5, ge=0.0)  # weight of the value MSE in the summed loss
    max_grad_norm: float | None = Field(None, gt=0)  # None: no gradient clipping
    network: NetworkSpec = MLPSpec(hidden=[64, 64], activation="tanh")
    optimizer: OptimizerSpec = OptimizerSpec()


class Policy(nn.Module):
    """body -> categorical (Discrete) or diagonal Gaussian (Box) head."""

    def __init__(self, network, obs_space: gym.Space, action_space: gym.Space):
        super().__init__()
        self.body = build_body(network, obs_space.shape)
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if self.discrete:
            self.head = CategoricalHead(self.body.out_dim, int(action_space.n))
        else:
            self.head = GaussianHead(self.body.out_dim, int(np.prod(action_space.shape)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(obs))

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        return self.head.distribution(self(obs))

    def log_prob_entropy(self, obs, actions) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.distribution(obs)
        if self.discrete:
            return dist.log_prob(actions), dist.entropy()
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator | None):
        out = self(obs)
        if self.discrete:
            if deterministic:
                return out.argmax(-1)
            return torch.multinomial(torch.softmax(out, -1), 1, generator=generator).squeeze(-1)
        if deterministic:
            return out
        noise = torch.randn(out.shape, generator=generator, device=out.device)
        return out + self.head.log_std.exp() * noise


class ValueNet(nn.Module):
    def __init__(self, network, obs_space: gym.Space):
        super().__init__()
        self.body = build_body(network, obs_space.shape)
        self.head = ValueHead(self.body.out_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(obs))


@dataclass
class Episode:
    obs: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    final_obs: np.ndarray | None = None  # set when truncated: bootstrap from V(final_obs)


class Reinforce:
    Config = ReinforceConfig

    def __init__(self, config: ReinforceConfig, env_spec, *, device: str = "cpu", seed: int = 0):
        self.config, self.env_spec, self.seed = config, env_spec, int(seed)
        self.device = resolve_device(device)
        probe = make_env(env_spec)
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()

        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG left alone
            torch.manual_seed(self.seed)
            self.policy = Policy(config.network, self.observation_space, self.action_space)
            self.value = ValueNet(config.network, self.observation_space)
        self.policy.to(self.device)
        self.value.to(self.device)
        params = list(self.policy.parameters()) + list(self.value.parameters())
        self.optimizer = build_optimizer(params, config.optimizer, config.lr)
        # The agent's own RNG for action sampling, so a checkpoint restores it exactly.
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)

        self.num_timesteps = 0
        self.num_updates = 0
        self.env = None  # created on the first learn()
        self._obs = None  # current observation batch; None: reset before stepping
        self._running: list[Episode] = []
        self._tracker: EpisodeTracker | None = None
        self._last_return = float("nan")

    # ---- acting ---------------------------------------------------------------------------

    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)

    def _env_actions(self, actions: torch.Tensor) -> np.ndarray:
        a = actions.cpu().numpy()
        if isinstance(self.action_space, gym.spaces.Box):
            a = np.clip(a.reshape((-1, *self.action_space.shape)),
                        self.action_space.low, self.action_space.high)
        return a

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        obs = np.asarray(obs)
        single = obs.shape == self.observation_space.shape
        batch = obs[None] if single else obs
        actions = self._env_actions(
            self.policy.act(self._obs_tensor(batch), deterministic, self.generator))
        return (actions[0] if single else actions), state

    # ---- learning -------------------------------------------------------------------------

    def _start_envs(self) -> None:
        if self.env is None:
            self.env = make_vec_env(self.env_spec, seed=self.seed)
        n = self.env.num_envs
        # A resumed agent starts fresh episodes, seeded apart from the ones already played.
        self._obs, _ = self.env.reset(seed=self.seed + self.num_timesteps)
        self._running = [Episode() for _ in range(n)]
        self._tracker = EpisodeTracker(n)

    def _collect(self, total_steps: int, logger) -> list[Episode]:
        """Step until enough episodes have finished (or the step budget is reached)."""
        cfg, batch = self.config, []
        while len(batch) < cfg.episodes_per_update and self.num_timesteps < total_steps:
            actions = self._env_actions(
                self.policy.act(self._obs_tensor(self._obs), False, self.generator))
            next_obs, rewards, terminated, truncated, _ = self.env.step(actions)
            finished = self._tracker.step(rewards, terminated, truncated)
            valid = self._tracker.valid
            self.num_timesteps += int(valid.sum())
            for i in np.flatnonzero(valid):
                ep = self._running[i]
                ep.obs.append(self._obs[i])
                ep.actions.append(actions[i])
                ep.rewards.append(float(rewards[i]))
                if terminated[i] or truncated[i]:
                    if truncated[i] and not terminated[i]:
                        ep.final_obs = next_obs[i]
                    batch.append(ep)
                    self._running[i] = Episode()
            log_episodes(logger, finished, self.num_timesteps)
            if finished:
                self._last_return = finished[-1][0]
            self._obs = next_obs
        return batch

    def _update(self, batch: list[Episode]) -> dict[str, float]:
        cfg = self.config
        obs = self._obs_tensor(np.concatenate([np.stack(ep.obs) for ep in batch]))
        actions = torch.as_tensor(np.concatenate([np.stack(ep.actions) for ep in batch]),
                                  device=self.device)
        if not self.policy.discrete:
            actions = actions.float()
        returns = []
        for ep in batch:
            bootstrap = 0.0
            if ep.final_obs is not None:
                with torch.no_grad():
                    bootstrap = float(self.value(self._obs_tensor(ep.final_obs[None]))[0])
            returns.append(reward_to_go(np.asarray(ep.rewards), cfg.gamma, bootstrap))
        returns = torch.as_tensor(np.concatenate(returns), dtype=torch.float32,
                                  device=self.device)

        values = self.value(obs)
        advantages = returns - values.detach() if cfg.baseline else returns
        if cfg.normalize_advantages:
            advantages = standardize(advantages)
        log_probs, entropy = self.policy.log_prob_entropy(obs, actions)
        pg_loss = policy_gradient_loss(log_probs, advantages)
        value_loss = torch.nn.functional.mse_loss(values, returns)
        entropy_mean = entropy.mean()
        loss = pg_loss - cfg.ent_coef * entropy_mean
        if cfg.baseline:
            loss = loss + cfg.vf_coef * value_loss

        # Named as agents/actor_critic.py logs them: loss/entropy is the entropy loss -H.
        losses = {"loss/policy": pg_loss.item(), "loss/value": value_loss.item(),
                  "loss/entropy": -entropy_mean.item()}
        # Check before stepping, so a NaN never reaches the weights.
        check_finite(losses, self.num_timesteps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(
                list(self.policy.parameters()) + list(self.value.parameters()), cfg.max_grad_norm)
        self.optimizer.step()
        self.num_updates += 1
        return losses

    def learn(self, total_steps: int, logger, checkpointer=None, progress=None) -> None:
        if self._obs is None:
            self._start_envs()
        start_steps, start_time = self.num_timesteps, time.perf_counter()
        while self.num_timesteps < total_steps:
            batch = self._collect(total_steps, logger)
            if batch:
                losses = self._update(batch)
                elapsed = time.perf_counter() - start_time
                logger.log({**losses,
                            "time/steps_per_sec": (self.num_timesteps - start_steps) / elapsed},
                           step=self.num_timesteps)
            if checkpointer is not None:
                checkpointer.maybe_save(self.num_timesteps, self.state_dict)
            if progress is not None:
                progress(self.num_timesteps, self._last_return)

    # ---- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "value": self.value.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "num_timesteps": self.num_timesteps,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.num_timesteps = int(state["num_timesteps"])
        self.num_updates = int(state["num_updates"])
        self._obs = None  # episodes in flight are not part of a checkpoint: start fresh ones
