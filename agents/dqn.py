"""Deep Q-Network (Mnih et al. 2015) with the usual options: double DQN (van Hasselt et al. 2016),
a dueling head (Wang et al. 2016), n-step returns and prioritized replay (Schaul et al. 2016).
Huber loss, gradient-norm clipping, hard or Polyak target updates, a linear epsilon schedule.

The loop keeps Stable-Baselines3's meaning of every setting, so an rl-zoo3 preset means the
same thing here as there:

- ``train_freq`` counts ``env.step()`` calls; each call gives ``num_envs`` transitions and
  ``num_timesteps`` counts transitions.
- Before ``learning_starts`` transitions, actions are uniform random; then epsilon-greedy.
- Epsilon falls linearly from ``exploration_initial_eps`` to ``exploration_final_eps`` over the
  first ``exploration_fraction * total_timesteps`` transitions.
- Every ``target_update_interval // num_envs`` calls (at least 1) the target network moves to
  ``tau * online + (1 - tau) * target`` (tau = 1: a copy). This happens while collecting, so
  the target network is fixed during a training phase.
- After every ``train_freq`` calls, once ``num_timesteps > learning_starts``: ``gradient_steps``
  updates (-1: one per transition collected since the last phase) on fresh batches.

NEXT_STEP autoreset: the step after an episode ends only resets that env. It is not a
transition: it is not stored and does not count as a step for any counter above. On the step
that ends an episode the returned observation is the true final one, so a truncated episode
bootstraps from it and a terminated one does not.

Images: conv bodies (``nature_cnn``, ``minatar_cnn``) get observations as stored, uint8 pixels
scaled inside the body; envs that stack frames (the Atari wrapper) get the frame replay buffer
(``agents/frame_replay.py``, each frame stored once) unless ``frame_replay`` says otherwise.
With the Atari wrapper the logged episodes are whole games with the real score.

Speed: the buffer lives in tensors on the device; with uniform replay a training phase draws all
its batches at once, and (plain DQN) computes every target with one pass of the fixed target
network; the loss is read back once per phase (``check_finite`` on the mean: if any step's loss
was NaN or inf, so is the mean).

Checkpoints: ``state_dict(include_replay=None)`` holds networks, optimizer, counters and RNGs;
the replay buffer too when ``include_replay`` is True, or when it is None and the attribute
``save_replay`` is True (default False; ``learn`` copies the checkpointer's ``include_replay``,
which the runner sets from ``train.save_replay``). A resumed
agent starts fresh episodes (an env's state is not saved); transitions pending for n-step returns
at save time are lost.
"""

from __future__ import annotations

import copy
import time
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from agents.common import (
    EpisodeTracker,
    log_episodes,
    make_env,
    make_vec_env,
    recorded_episodes,
    records_games,
    resolve_device,
)
from agents.frame_replay import FrameReplayBuffer
from agents.replay import ReplayBuffer
from envs.atari import stacks_frames
from lab.backbone import (
    DuelingQHead,
    MLPSpec,
    NetworkSpec,
    OptimizerSpec,
    QHead,
    build_body,
    build_optimizer,
)
from lab.backbone.fast_mlp import (
    adam_step,
    clip_grad_norm,
    flatten_parameters,
    mlp_backward,
    mlp_forward,
    mlp_layers,
)
from lab.checkpoint import check_finite, generator_state, set_generator_state

# Plain MLP Q-networks train with hand-written backprop (lab/backbone/fast_mlp.py); False puts
# every network on autograd (the tests compare the two).
FAST_PATH = True
# Rows per pass of the target network over a phase's batches: one pass over all of them (8192
# rows for the cartpole preset) spends as long in page faults on fresh 8 MB activations as in
# the products; ~1 MB chunks stay in cache.
_CHUNK = 1024
# Greedy actions for up to this many observations use the numpy copy of a CPU fast-path net.
_NUMPY_ROWS = 16


class DQNConfig(BaseModel):
    """Hyperparameters; names and defaults follow SB3's DQN where it has the setting."""

    model_config = ConfigDict(extra="forbid")

    algo: Literal["dqn"] = "dqn"
    network: NetworkSpec = MLPSpec(hidden=[64, 64], activation="relu")
    optimizer: OptimizerSpec = OptimizerSpec()
    lr: float = Field(1e-4, gt=0)
    buffer_size: int = Field(1_000_000, ge=1)
    learning_starts: int = Field(100, ge=0)  # transitions of uniform random actions first
    batch_size: int = Field(32, ge=1)
    gamma: float = Field(0.99, ge=0.0, le=1.0)
    train_freq: int = Field(4, ge=1)  # env.step() calls between training phases
    gradient_steps: int = Field(1, ge=-1)  # updates per phase; -1: one per transition collected
    target_update_interval: int = Field(10_000, ge=1)  # transitions between target updates
    tau: float = Field(1.0, gt=0.0, le=1.0)  # 1: hard copy; < 1: Polyak averaging
    exploration_fraction: float = Field(0.1, gt=0.0, le=1.0)
    exploration_initial_eps: float = Field(1.0, ge=0.0, le=1.0)
    exploration_final_eps: float = Field(0.05, ge=0.0, le=1.0)
    # The run length that exploration_fraction (and PER's beta annealing) refer to, like SB3's
    # learn(total_timesteps). None: the total_steps of the current learn() call.
    total_timesteps: int | None = Field(None, ge=1)
    max_grad_norm: float | None = Field(10.0, gt=0.0)  # None: no clipping
    loss: Literal["huber", "mse"] = "huber"
    double_q: bool = False
    dueling: bool = False
    n_step: int = Field(1, ge=1)
    prioritized: bool = False
    per_alpha: float = Field(0.6, ge=0.0)
    per_beta: float = Field(0.4, ge=0.0, le=1.0)  # annealed linearly to 1 over total_timesteps
    per_eps: float = Field(1e-6, gt=0.0)
    # Store each frame of stacked-frame observations once (agents/frame_replay.py: 1M Atari
    # transitions in ~7.3 GB instead of ~56 GB). None: when the env stacks frames with
    # gymnasium's FrameStackObservation (the Atari wrapper does).
    frame_replay: bool | None = None


# ---- pure math --------------------------------------------------------------------------------


def linear_schedule(step: float, start: float, end: float, duration: float) -> float:
    """``start`` at step 0, straight to ``end`` at ``duration``, ``end`` afterwards."""
    if step >= duration:
        return end
    return start + (end - start) * step / duration


def td_target(rewards: torch.Tensor, discounts: torch.Tensor, dones: torch.Tensor,
              next_values: torch.Tensor) -> torch.Tensor:
    """r + discount * (1 - done) * V(s'); done = terminated (truncation bootstraps)."""
    return rewards + discounts * (1.0 - dones) * next_values


def max_next_q(target_next_q: torch.Tensor) -> torch.Tensor:
    """DQN: V(s') = max_a Q_target(s', a)."""
    return target_next_q.max(dim=1).values


def double_q_next_q(online_next_q: torch.Tensor, target_next_q: torch.Tensor) -> torch.Tensor:
    """Double DQN: V(s') = Q_target(s', argmax_a Q_online(s', a))."""
    best = online_next_q.argmax(dim=1, keepdim=True)
    return target_next_q.gather(1, best).squeeze(1)


def q_loss(q: torch.Tensor, target: torch.Tensor, kind: str = "huber",
           weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean Huber (delta = 1, SB3's smooth_l1) or squared error, optionally importance-weighted."""
    fn = F.smooth_l1_loss if kind == "huber" else F.mse_loss
    if weights is None:
        return fn(q, target)
    return (weights * fn(q, target, reduction="none")).mean()


def q_loss_and_grad(q: torch.Tensor, target: torch.Tensor, kind: str = "huber",
                    weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``q_loss`` and its gradient d loss / d q, written out: Huber (delta 1) is 0.5 x^2 for
    |x| < 1 else |x| - 0.5, gradient clamp(x, -1, 1); squared error x^2, gradient 2x; both
    averaged over the batch (and weighted by the importance weights when given)."""
    grad = q - target
    grad = grad.clamp_(-1.0, 1.0) if kind == "huber" else grad.mul_(2.0)
    if weights is not None:
        grad = grad.mul_(weights)
    return q_loss(q, target, kind, weights), grad.div_(grad.numel())


# ---- the agent --------------------------------------------------------------------------------


def build_q_network(config: DQNConfig, obs_shape: tuple[int, ...], n_actions: int) -> nn.Module:
    body = build_body(config.network, obs_shape)
    head = (DuelingQHead if config.dueling else QHead)(body.out_dim, n_actions)
    return nn.Sequential(body, head)


class DQN:
    Config = DQNConfig

    def __init__(self, config: DQNConfig, env_spec, *, device: str = "cpu", seed: int = 0):
        self.config, self.env_spec, self.seed = config, env_spec, int(seed)
        self.device = resolve_device(device)
        probe = make_env(env_spec)
        obs_space, act_space = probe.observation_space, probe.action_space
        frame_stack = stacks_frames(probe)
        probe.close()
        if not isinstance(act_space, gym.spaces.Discrete):
            raise ValueError(f"DQN needs a Discrete action space, {env_spec.id} has {act_space}")
        if not isinstance(obs_space, gym.spaces.Box):
            raise ValueError(f"DQN needs a Box observation space, {env_spec.id} has {obs_space}")
        self.obs_shape, self.n_actions = tuple(obs_space.shape), int(act_space.n)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.q_net = build_q_network(config, self.obs_shape, self.n_actions).to(self.device)
        self.target_net = copy.deepcopy(self.q_net).requires_grad_(False)
        # a plain MLP + linear head (not dueling) trains on the hand-written fast path
        body, head = self.q_net[0], self.q_net[1]
        self._layers = (None if config.dueling or not FAST_PATH
                        else mlp_layers(body, head.linear))
        self._target_layers = (None if self._layers is None
                               else mlp_layers(self.target_net[0], self.target_net[1].linear))
        params = list(self.q_net.parameters())
        self._params = [flatten_parameters(params)] if self._layers is not None else params
        # the target update's tensors, listed once (load_state_dict copies into them in place)
        self._target_pairs = (list(self.target_net.parameters()), params)
        self._target_buffers = (list(self.target_net.buffers()), list(self.q_net.buffers()))
        # acting on the CPU: numpy views of the fast path's weights (always current: they share
        # memory) run a one-row forward in a third of torch's per-call overhead
        self._np_layers = None
        if self._layers is not None and self.device.type == "cpu":
            self._np_layers = [(w.detach().numpy().T, b.detach().numpy(),
                                None if act is None else type(act).__name__)
                               for w, b, act in self._layers]
        # conv bodies take images as stored (uint8 pixels are scaled to [0, 1] inside them);
        # MLPs and the fast path take floats
        self._float_input = config.network.type == "mlp"
        self.optimizer = build_optimizer(self._params, config.optimizer, config.lr)
        self._optimizer_step = adam_step(self.optimizer)
        frames = config.frame_replay if config.frame_replay is not None else frame_stack > 1
        if frames and len(self.obs_shape) < 2:
            raise ValueError(f"frame_replay needs stacked-frame observations, {env_spec.id} "
                             f"has shape {self.obs_shape}")
        self.buffer = (FrameReplayBuffer if frames else ReplayBuffer)(
            config.buffer_size, self.obs_shape, obs_space.dtype, num_envs=env_spec.num_envs,
            n_step=config.n_step, gamma=config.gamma, device=self.device,
            prioritized=config.prioritized, alpha=config.per_alpha, priority_eps=config.per_eps)
        self.rng = np.random.default_rng(self.seed)  # exploration, PER draws
        self.torch_rng = torch.Generator(device=self.device)  # uniform replay draws
        self.torch_rng.manual_seed(self.seed)

        self.num_timesteps = 0  # transitions collected
        self.n_calls = 0  # env.step() calls that held at least one transition
        self.n_updates = 0  # gradient steps
        self.exploration_rate = config.exploration_initial_eps
        self.save_replay = False
        self._rollout_calls = 0  # env.step() calls since the last training phase
        self._rollout_transitions = 0
        self._horizon = config.total_timesteps
        self._env = None

    # ---- acting -------------------------------------------------------------------------------

    @torch.no_grad()
    def _greedy(self, obs: np.ndarray) -> np.ndarray:
        if self._np_layers is not None and len(obs) <= _NUMPY_ROWS:
            x = np.asarray(obs, dtype=np.float32)
            for w_t, b, act in self._np_layers:
                x = x @ w_t
                x += b
                if act == "ReLU":
                    np.maximum(x, 0.0, out=x)
                elif act == "Tanh":
                    np.tanh(x, out=x)
            return x.argmax(axis=1)
        x = self._input(torch.as_tensor(obs, device=self.device))
        return self.q_net(x).argmax(dim=1).cpu().numpy()

    def _input(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations as the Q-network takes them: floats for MLPs, as stored for convs."""
        return obs.float() if self._float_input else obs

    def _epsilon_greedy(self, obs: np.ndarray, eps: float) -> np.ndarray:
        n = len(obs)
        explore = self.rng.random(n) < eps
        if explore.all():
            return self.rng.integers(self.n_actions, size=n)
        actions = self._greedy(obs)
        if explore.any():
            actions = np.where(explore, self.rng.integers(self.n_actions, size=n), actions)
        return actions

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = False):
        """SB3's signature: greedy when deterministic, else epsilon-greedy at the current rate."""
        obs = np.asarray(obs)
        single = obs.shape == self.obs_shape
        batch = obs[None] if single else obs
        if deterministic:
            actions = self._greedy(batch)
        else:
            actions = self._epsilon_greedy(batch, self.exploration_rate)
        return (actions[0] if single else actions), state

    # ---- learning -----------------------------------------------------------------------------

    def _start_envs(self) -> None:
        self._env = make_vec_env(self.env_spec, self.seed + self.num_timesteps)
        self._obs, _ = self._env.reset(seed=self.seed + self.num_timesteps)
        self._tracker = EpisodeTracker(self._env.num_envs)
        self._resetting = np.zeros(self._env.num_envs, dtype=bool)
        self._last_return = float("nan")
        self._games = records_games(self.env_spec)  # log whole games, not lives

    def learn(self, total_steps: int, logger, checkpointer=None, progress=None) -> DQN:
        cfg = self.config
        if self._env is None:
            self._start_envs()
        if cfg.total_timesteps is None:
            self._horizon = total_steps
        # the runner marks train.save_replay on the checkpointer: periodic saves honour it too
        self.save_replay = bool(getattr(checkpointer, "include_replay", self.save_replay))
        env, tracker, num_envs = self._env, self._tracker, self._env.num_envs
        eps_steps = cfg.exploration_fraction * self._horizon
        target_every = max(cfg.target_update_interval // num_envs, 1)
        obs = self._obs
        clock, clock_steps = time.perf_counter(), self.num_timesteps

        while self.num_timesteps < total_steps:
            if self._resetting.all():  # every env only resets this step: any action will do
                actions = np.zeros(num_envs, dtype=np.int64)
            elif self.num_timesteps < cfg.learning_starts:
                actions = self.rng.integers(self.n_actions, size=num_envs)
            else:
                actions = self._epsilon_greedy(obs, self.exploration_rate)
            next_obs, rewards, terminated, truncated, infos = env.step(actions)
            finished = tracker.step(rewards, terminated, truncated)
            if self._games:
                finished = recorded_episodes(infos)
            if finished:
                log_episodes(logger, finished, self.num_timesteps)
                self._last_return = finished[-1][0]
            valid = tracker.valid
            self._resetting = terminated | truncated
            n_valid = int(valid.sum())
            if n_valid:
                self.buffer.add(obs, actions, rewards, next_obs, terminated, truncated, valid)
            obs = next_obs
            if n_valid == 0:
                continue  # a reset-only step is not an env step for any counter

            self.num_timesteps += n_valid
            self.n_calls += 1
            if self.n_calls % target_every == 0:
                self._update_target()
            self.exploration_rate = linear_schedule(
                self.num_timesteps, cfg.exploration_initial_eps, cfg.exploration_final_eps,
                eps_steps)
            self._rollout_calls += 1
            self._rollout_transitions += n_valid
            if self._rollout_calls < cfg.train_freq:
                continue

            # ---- end of a rollout: a training phase ----
            if self.num_timesteps > cfg.learning_starts and len(self.buffer) > 0:
                steps = (cfg.gradient_steps if cfg.gradient_steps >= 0
                         else self._rollout_transitions)
                if steps > 0:
                    loss = self._train(steps)
                    check_finite({"loss/td": loss}, self.num_timesteps)
                    metrics = {"loss/td": loss, "train/epsilon": self.exploration_rate}
                    if self.num_timesteps - clock_steps >= 1000:
                        now = time.perf_counter()
                        metrics["time/steps_per_sec"] = (
                            (self.num_timesteps - clock_steps) / (now - clock))
                        clock, clock_steps = now, self.num_timesteps
                    logger.log(metrics, step=self.num_timesteps)
            self._rollout_calls = self._rollout_transitions = 0
            if checkpointer is not None:
                self._obs = obs
                checkpointer.maybe_save(self.num_timesteps, self.state_dict)
            if progress is not None:
                progress(self.num_timesteps, self._last_return)

        self._obs = obs
        if checkpointer is not None:
            checkpointer.maybe_save(self.num_timesteps, self.state_dict)
        if progress is not None:
            progress(self.num_timesteps, self._last_return)
        return self

    @torch.no_grad()
    def _update_target(self) -> None:
        torch._foreach_lerp_(*self._target_pairs, self.config.tau)  # tau = 1 gives p exactly
        if self._target_buffers[0]:  # running statistics (batch norm) are copied, as SB3 does
            torch._foreach_copy_(*self._target_buffers)

    @torch.no_grad()
    def _next_values(self, next_obs: torch.Tensor) -> torch.Tensor:
        if len(next_obs) > _CHUNK:  # a whole phase's batches: chunks keep activations in cache
            return torch.cat([self._next_values(c) for c in next_obs.split(_CHUNK)])
        if self._target_layers is not None:
            target_q = mlp_forward(self._target_layers, next_obs)[0]
        else:
            target_q = self.target_net(next_obs)
        if self.config.double_q:
            return double_q_next_q(self.q_net(next_obs), target_q)
        return max_next_q(target_q)

    def _train(self, gradient_steps: int) -> float:
        """``gradient_steps`` updates; returns their mean loss."""
        cfg, size = self.config, self.config.batch_size
        params = list(self.q_net.parameters())
        uniform, fixed_targets = not cfg.prioritized, not cfg.prioritized and not cfg.double_q
        fast, batch, batches = self._layers is not None, None, None
        if uniform:  # the buffer does not change during the phase: draw every batch at once
            data = self.buffer.sample(gradient_steps * size, self.torch_rng)
            if not (fast and fixed_targets):
                batches = [data.rows(i * size, (i + 1) * size) for i in range(gradient_steps)]
            if fixed_targets:  # nor does the target network: one pass gives every target
                targets = td_target(data.rewards, data.discounts, data.dones,
                                    self._next_values(self._input(data.next_obs)))
                targets = (targets[:, None] if fast else targets).split(size)
            if fast:  # per-batch inputs of the hand-written step, sliced from the whole phase's
                obs_b = data.obs.float().split(size)
                actions = data.actions[:, None]
                action_b = actions.split(size)
                one_hot_b = torch.zeros(len(actions), self.n_actions,
                                        device=self.device).scatter_(1, actions, 1.0).split(size)
        else:
            beta = linear_schedule(self.num_timesteps, cfg.per_beta, 1.0, self._horizon)
        loss_sum = torch.zeros((), device=self.device)
        for i in range(gradient_steps):
            if not uniform:
                batch = self.buffer.sample_prioritized(size, beta, self.rng)
            elif batches is not None:
                batch = batches[i]
            if fixed_targets:
                target = targets[i]
            else:
                target = td_target(batch.rewards, batch.discounts, batch.dones,
                                   self._next_values(self._input(batch.next_obs)))
            if fast:
                with torch.no_grad():
                    if uniform:
                        obs, action, one_hot = obs_b[i], action_b[i], one_hot_b[i]
                    else:
                        obs, action = batch.obs.float(), batch.actions[:, None]
                        one_hot = torch.zeros(size, self.n_actions, device=self.device
                                              ).scatter_(1, action, 1.0)
                    out, kept = mlp_forward(self._layers, obs, keep=True)
                    q = out.gather(1, action)  # (B, 1)
                    if target.dim() == 1:
                        target = target[:, None]
                    weights = None if uniform else batch.weights[:, None]
                    loss, d_q = q_loss_and_grad(q, target, cfg.loss, weights)
                    mlp_backward(self._layers, kept, one_hot * d_q)  # d loss / d out
                    q, target = q.squeeze(1), target.squeeze(1)
            else:
                q = self.q_net(self._input(batch.obs)).gather(1, batch.actions[:, None]).squeeze(1)
                loss = q_loss(q, target, cfg.loss, batch.weights)
                for p in params:
                    p.grad = None  # what zero_grad(set_to_none=True) does, without its overhead
                loss.backward()
            if cfg.max_grad_norm is not None:
                clip_grad_norm(self._params, cfg.max_grad_norm)
            self._optimizer_step()
            if not uniform:
                self.buffer.update_priorities(batch.indices, q.detach() - target)
            loss_sum += loss.detach()
        self.n_updates += gradient_steps
        return float(loss_sum) / gradient_steps

    # ---- checkpoints --------------------------------------------------------------------------

    def state_dict(self, include_replay: bool | None = None) -> dict:
        if include_replay is None:
            include_replay = self.save_replay
        state = {
            "config": self.config.model_dump(mode="json"),
            "q_net": self.q_net.state_dict(),
            "target_net": self.target_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "num_timesteps": self.num_timesteps,
            "n_calls": self.n_calls,
            "n_updates": self.n_updates,
            "exploration_rate": self.exploration_rate,
            "rollout_calls": self._rollout_calls,
            "rollout_transitions": self._rollout_transitions,
            "horizon": self._horizon,
            "rng": generator_state(self.rng),
            "torch_rng": self.torch_rng.get_state(),
        }
        if include_replay:
            state["replay"] = self.buffer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.q_net.load_state_dict(state["q_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_timesteps = int(state["num_timesteps"])
        self.n_calls = int(state["n_calls"])
        self.n_updates = int(state["n_updates"])
        self.exploration_rate = float(state["exploration_rate"])
        self._rollout_calls = int(state["rollout_calls"])
        self._rollout_transitions = int(state["rollout_transitions"])
        self._horizon = state["horizon"]
        set_generator_state(self.rng, state["rng"])
        self.torch_rng.set_state(state["torch_rng"].cpu())
        if "replay" in state:
            self.buffer.load_state_dict(state["replay"])
        if self._env is not None:  # continue with fresh episodes
            self._env.close()
            self._env = None

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

