"""A2C (Mnih et al. 2016) and PPO (Schulman et al. 2017), sharing one rollout and one network.

One iteration reads top to bottom (``_OnPolicyAgent.learn``):

1. Roll out ``n_steps`` vector steps with the current policy: one batched forward per step
   under ``no_grad``, the rows go into ``agents.rollout.RolloutBuffer``.
2. GAE advantages and lambda-returns (``agents.rollout.gae_advantages``): termination does not
   bootstrap, truncation bootstraps from V(final observation). NEXT_STEP reset rows are masked.
3. The update: A2C takes one gradient step on the whole rollout (policy gradient, no advantage
   normalization); PPO takes ``n_epochs`` passes of ``batch_size`` minibatches on the clipped
   surrogate, advantages normalized per minibatch, optional value clipping and KL stop.
   Both: loss = policy + ent_coef * (-entropy) + vf_coef * value, grad norm clipped.

The semantics follow SB3 for the same hyperparameters: separate policy and value MLPs
([64, 64] tanh, orthogonal init with gains sqrt(2) / 0.01 / 1), PPO's Adam with eps 1e-5,
A2C's RMSprop(alpha=0.99, eps=1e-5), linear schedules on ``1 - steps / total_timesteps``
(rl-zoo3's ``lin_1e-3`` is ``lr: 1.0e-3, lr_schedule: linear``).

``lstm: true`` gives each branch an LSTM (``lab.backbone.LSTMCore``), like sb3-contrib's
RecurrentPPO with ``enable_critic_lstm``: obs -> LSTM -> MLP -> head for MLP nets (its
MlpLstmPolicy), body -> LSTM -> head for conv nets. Recurrent minibatches are whole
``n_steps`` sequences of ``batch_size // n_steps`` envs, started from the state the rollout
started with; invalid rows stay in the sequence (the memory must see them) but not in the loss.
"""

from __future__ import annotations

import math
import time
from typing import Literal

import numpy as np
import torch
from gymnasium import spaces
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
from agents.rollout import RolloutBuffer, RunningMeanStd, explained_variance
from lab.backbone import (
    CategoricalHead,
    GaussianHead,
    LSTMCore,
    NetworkSpec,
    OptimizerSpec,
    ValueHead,
    build_body,
    build_optimizer,
    init_actor_critic,
)
from lab.backbone.fast_mlp import (
    Layers,
    clip_grad_norm,
    flatten_parameters,
    mlp_backward,
    mlp_forward,
    mlp_layers,
)
from lab.backbone.specs import MLPSpec
from lab.checkpoint import check_finite

LOG_EVERY_STEPS = 2048  # env steps between two loss / speed records
DIAGNOSTICS = ("approx_kl", "clip_fraction", "explained_variance")  # not NaN-guarded
# The analytic-gradient fast path (below) for tanh/ReLU MLPs with Discrete actions: the same
# numbers as autograd, about twice as fast. False: autograd everywhere (tests compare the two).
ANALYTIC_GRADS = True


# ---- the math ---------------------------------------------------------------------------------


def linear_schedule(initial: float, progress_remaining: float) -> float:
    """rl-zoo3's ``lin_<initial>``: ``initial`` at the start, 0 at the end of the schedule."""
    return initial * min(max(progress_remaining, 0.0), 1.0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is True (all entries when None)."""
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def normalize_advantages(adv: torch.Tensor, mask: torch.Tensor | None = None,
                         eps: float = 1e-8) -> torch.Tensor:
    """(A - mean) / (std + eps) over the masked entries (unbiased std, as SB3); a batch of one
    is returned as is (SB3 skips it too)."""
    n = adv.numel() if mask is None else int(mask.sum())
    if n < 2:
        return adv
    mean = masked_mean(adv, mask)
    var = masked_mean((adv - mean) ** 2, mask) * (n / (n - 1))
    return (adv - mean) / (var.sqrt() + eps)


def policy_gradient_loss(log_probs: torch.Tensor, advantages: torch.Tensor,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """A2C's -mean(A * log pi(a|s))."""
    return -masked_mean(advantages * log_probs, mask)


def clipped_surrogate_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor,
                           advantages: torch.Tensor, clip_range: float,
                           mask: torch.Tensor | None = None) -> torch.Tensor:
    """PPO's -mean(min(r A, clip(r, 1 - eps, 1 + eps) A)), r = pi(a|s) / pi_old(a|s)."""
    ratio = torch.exp(log_probs - old_log_probs)
    unclipped = advantages * ratio
    clipped = advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return -masked_mean(torch.min(unclipped, clipped), mask)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip_range: float | None, mask: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """Mean squared error to the returns; with ``clip_range`` the prediction first moves at most
    ``clip_range`` away from the rollout's value (SB3's ``clip_range_vf``: the clipped
    prediction alone, not the max of clipped and unclipped errors)."""
    if clip_range is not None:
        values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    return masked_mean((returns - values) ** 2, mask)


# ---- the network ------------------------------------------------------------------------------


class ActorCritic(nn.Module):
    """Separate policy and value branches from ``lab.backbone``: body -> head, or with an LSTM
    obs -> LSTM -> MLP body -> head (conv bodies: body -> LSTM -> head). ``share_body``: one
    body under both heads (computed once per forward), as SB3's CnnPolicy.

    ``forward(obs, state, episode_starts) -> (policy_out, values, state)``: ``obs`` is
    ``(N, *obs_shape)``, or ``(T, B, *obs_shape)`` for a recurrent net; ``policy_out`` is logits
    (Discrete) or the Gaussian mean (Box); ``state`` is ``(pi_state, vf_state)`` or None.
    """

    def __init__(self, obs_shape: tuple[int, ...], action_space: spaces.Space, network,
                 lstm_hidden: int | None = None, log_std_init: float = 0.0,
                 share_body: bool = False):
        super().__init__()
        self.recurrent = lstm_hidden is not None
        self.pi_lstm = self.vf_lstm = None
        # MLP nets: obs -> LSTM -> MLP -> head (sb3-contrib's MlpLstmPolicy; it learns the
        # POMDP CartPole far better than MLP -> LSTM); conv nets: body -> LSTM -> head.
        self.lstm_first = self.recurrent and network.type == "mlp"
        self.obs_dims = len(obs_shape)
        if self.lstm_first:
            self.pi_lstm = LSTMCore(math.prod(obs_shape), lstm_hidden, init=network.init)
            self.vf_lstm = LSTMCore(math.prod(obs_shape), lstm_hidden, init=network.init)
            obs_shape = (lstm_hidden,)
        self.pi_body = build_body(network, obs_shape)
        # share_body: one body feeds both heads (SB3's CnnPolicy shares its NatureCNN)
        self.shared = share_body
        self.vf_body = self.pi_body if share_body else build_body(network, obs_shape)
        features = self.pi_body.out_dim
        if self.recurrent and not self.lstm_first:
            self.pi_lstm = LSTMCore(features, lstm_hidden, init=network.init)
            self.vf_lstm = LSTMCore(features, lstm_hidden, init=network.init)
            features = lstm_hidden
        self.discrete = isinstance(action_space, spaces.Discrete)
        if self.discrete:
            self.pi_head = CategoricalHead(features, int(action_space.n))
        else:
            self.pi_head = GaussianHead(features, math.prod(action_space.shape), log_std_init)
        self.vf_head = ValueHead(features)
        if network.init == "orthogonal":  # SB3's ortho_init: heads at gains 0.01 and 1
            init_actor_critic(policy_head=self.pi_head, value_head=self.vf_head)

    def _branch(self, body, lstm, obs, state, episode_starts):
        if self.lstm_first:
            x, state = lstm(obs.flatten(obs.dim() - self.obs_dims), state, episode_starts)
            return body(x), state
        x = body(obs)
        if lstm is not None:
            x, state = lstm(x, state, episode_starts)
        return x, state

    def policy(self, obs, state=None, episode_starts=None):
        """The policy branch alone (acting without a value): ``(policy_out, pi_state)``."""
        x, state = self._branch(self.pi_body, self.pi_lstm, obs, state, episode_starts)
        return self.pi_head(x), state

    def value(self, obs, state=None, episode_starts=None):
        x, state = self._branch(self.vf_body, self.vf_lstm, obs, state, episode_starts)
        return self.vf_head(x), state

    def forward(self, obs, state=None, episode_starts=None):
        if self.shared and not self.lstm_first:  # the shared body runs once
            x = self.pi_body(obs)
            pi_state, vf_state = (None, None) if state is None else state
            x_pi, x_vf = x, x
            if self.recurrent:
                x_pi, pi_state = self.pi_lstm(x, pi_state, episode_starts)
                x_vf, vf_state = self.vf_lstm(x, vf_state, episode_starts)
            return (self.pi_head(x_pi), self.vf_head(x_vf),
                    (pi_state, vf_state) if self.recurrent else None)
        pi_state, vf_state = (None, None) if state is None else state
        policy_out, pi_state = self.policy(obs, pi_state, episode_starts)
        values, vf_state = self.value(obs, vf_state, episode_starts)
        return policy_out, values, ((pi_state, vf_state) if self.recurrent else None)

    def sample(self, policy_out: torch.Tensor, deterministic: bool = False,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """An action per row of ``(N, ...)`` policy outputs and its log-probability."""
        if self.discrete:
            log_p = policy_out.log_softmax(-1)
            if deterministic:
                action = log_p.argmax(-1)
            else:  # Gumbel-max: argmax(log p - log E), E ~ Exp(1), is a draw from p
                noise = torch.empty_like(log_p).exponential_(generator=generator)
                action = (log_p - noise.log()).argmax(-1)
            return action, log_p.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        action = policy_out
        if not deterministic:
            noise = torch.randn(policy_out.shape, generator=generator, device=policy_out.device)
            action = policy_out + self.pi_head.log_std.exp() * noise
        return action, self.log_prob(policy_out, action)

    def log_prob(self, policy_out: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) per row."""
        if self.discrete:
            log_p = policy_out.log_softmax(-1)
            return log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        log_std = self.pi_head.log_std
        z = (actions - policy_out) * torch.exp(-log_std)
        return (-0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self, policy_out: torch.Tensor) -> torch.Tensor:
        """The policy's entropy per row."""
        if self.discrete:
            log_p = policy_out.log_softmax(-1)
            return -(log_p.exp() * log_p).sum(-1)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + self.pi_head.log_std).sum(-1)
        return entropy.expand(policy_out.shape[:-1])


# ---- analytic gradients: the fast path for MLP nets with a categorical policy ----------------
#
# Autograd spends most of a small MLP's update in per-op bookkeeping, not arithmetic. For the
# common case (feed-forward tanh/ReLU MLPs from lab.backbone, Discrete actions) the gradients
# of the A2C / PPO loss are written out below: the same numbers autograd gives (tested against
# it), in about half the time. Everything else (LSTM, conv bodies, Box actions) uses autograd.



def fuse_branches(pi: Layers, vf: Layers) -> Layers:
    """One MLP that computes both branches side by side (their first layers stacked, the
    others block-diagonal): output = [policy_out | value]. For acting, where the batch is a
    handful of envs and the number of kernel calls, not their size, is the cost."""
    fused = []
    for i, ((w_pi, b_pi, act), (w_vf, b_vf, _)) in enumerate(zip(pi, vf, strict=True)):
        w = torch.cat([w_pi, w_vf]) if i == 0 else torch.block_diag(w_pi, w_vf)
        fused.append((w.detach(), torch.cat([b_pi, b_vf]).detach(), act))
    return fused


@torch.no_grad()
def categorical_loss_grads(logits, values, actions, advantages, returns, old_log_probs,
                           old_values, clip_range: float | None, clip_range_vf: float | None,
                           ent_coef: float, vf_coef: float, with_losses: bool = True):
    """The gradient of a minibatch's loss w.r.t. the logits and the values, and the losses.

    Loss = policy + vf_coef * value + ent_coef * (-entropy), the policy term being A2C's
    ``policy_gradient_loss`` (``clip_range`` None) or PPO's ``clipped_surrogate_loss``, the
    value term ``clipped_value_loss``. Returns (d_logits, d_values, log_probs, losses) with
    losses = stacked (policy, value, -entropy) when ``with_losses``, else None.
    """
    n = logits.shape[0]
    log_p = logits.log_softmax(-1)
    p = log_p.exp()
    log_probs = log_p.gather(1, actions.unsqueeze(1)).squeeze(1)
    if clip_range is None:
        objective = advantages * log_probs
        d_log_probs = advantages * (-1.0 / n)
    else:
        ratio = torch.exp(log_probs - old_log_probs)
        unclipped = advantages * ratio
        objective = torch.min(unclipped, advantages * ratio.clamp(1 - clip_range, 1 + clip_range))
        # d/d log pi of -r A / n where the unclipped term is the min, 0 where the clip binds
        d_log_probs = unclipped.mul_(unclipped <= objective).mul_(-1.0 / n)
    d_logits = p * (-d_log_probs).unsqueeze(1)  # d log pi(a) / d logits = onehot(a) - p
    d_logits.scatter_add_(1, actions.unsqueeze(1), d_log_probs.unsqueeze(1))
    entropy = -(p * log_p).sum(-1) if (ent_coef or with_losses) else None
    if ent_coef:  # d(-H)/d logits = p (log p + H)
        d_logits += (log_p + entropy.unsqueeze(1)).mul_(p).mul_(ent_coef / n)
    pred = values
    if clip_range_vf is not None:
        pred = old_values + (values - old_values).clamp(-clip_range_vf, clip_range_vf)
    err = pred - returns
    losses = (torch.stack([-objective.mean(), (err * err).mean(), -entropy.mean()])
              if with_losses else None)
    d_values = err.mul_(2.0 * vf_coef / n)
    if clip_range_vf is not None:
        d_values.mul_((values - old_values).abs() <= clip_range_vf)
    return d_logits, d_values, log_probs, losses


# ---- configs ----------------------------------------------------------------------------------


def _default_network() -> MLPSpec:
    return MLPSpec(hidden=[64, 64], activation="tanh", init="orthogonal")


class _OnPolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = Field(gt=0)
    lr_schedule: Literal["constant", "linear"] = "constant"
    # env steps over which linear schedules go to 0; None: the total_steps of the learn() call
    # (SB3's behaviour for one call). Set it when a runner calls learn() in chunks.
    total_timesteps: int | None = Field(None, gt=0)
    n_steps: int = Field(ge=1)  # vector steps per rollout (rollout size n_steps * num_envs)
    gamma: float = Field(0.99, ge=0.0, le=1.0)
    gae_lambda: float = Field(ge=0.0, le=1.0)
    ent_coef: float = Field(0.0, ge=0.0)
    vf_coef: float = Field(0.5, ge=0.0)
    max_grad_norm: float = Field(0.5, gt=0)
    normalize_advantage: bool
    network: NetworkSpec = Field(default_factory=_default_network)
    optimizer: OptimizerSpec
    lstm: bool = False  # an LSTM between body and head (both branches)
    # one body for the policy and value heads (SB3's CnnPolicy shares its NatureCNN); false:
    # separate bodies (SB3's MlpPolicy)
    share_body: bool = False
    lstm_hidden: int = Field(64, ge=1)
    log_std_init: float = 0.0  # Box action spaces: the Gaussian's initial log std
    # SB3's VecNormalize (rl-zoo3's ``normalize: true`` is both): observations centred and
    # scaled by running statistics, rewards scaled by the running std of the discounted return;
    # both clipped to +-clip. The statistics are part of the checkpoint.
    normalize_obs: bool = False
    normalize_reward: bool = False
    clip_obs: float = Field(10.0, gt=0)


class A2CConfig(_OnPolicyConfig):
    """SB3's A2C defaults."""

    algo: Literal["a2c"] = "a2c"
    lr: float = Field(7e-4, gt=0)
    n_steps: int = Field(5, ge=1)
    gae_lambda: float = Field(1.0, ge=0.0, le=1.0)
    normalize_advantage: bool = False
    optimizer: OptimizerSpec = Field(
        default_factory=lambda: OptimizerSpec(type="rmsprop", alpha=0.99, eps=1e-5))


class PPOConfig(_OnPolicyConfig):
    """SB3's PPO defaults."""

    algo: Literal["ppo"] = "ppo"
    lr: float = Field(3e-4, gt=0)
    n_steps: int = Field(2048, ge=1)
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0)
    normalize_advantage: bool = True
    optimizer: OptimizerSpec = Field(default_factory=lambda: OptimizerSpec(type="adam", eps=1e-5))
    batch_size: int = Field(64, ge=1)  # minibatch size (recurrent: batch_size // n_steps envs)
    n_epochs: int = Field(10, ge=1)
    clip_range: float = Field(0.2, gt=0)
    clip_range_schedule: Literal["constant", "linear"] = "constant"
    clip_range_vf: float | None = Field(None, gt=0)  # None: no value clipping
    target_kl: float | None = Field(None, gt=0)  # stop the epochs once approx KL > 1.5 x this


# ---- the agents -------------------------------------------------------------------------------


class _OnPolicyAgent:
    """Everything A2C and PPO share: envs, rollout, acting, logging, checkpoints.
    Subclasses define ``Config`` and ``_update(progress_remaining) -> losses``."""

    Config: type[_OnPolicyConfig]

    def __init__(self, config, env_spec, *, device: str = "cpu", seed: int = 0):
        self.config = self.Config.model_validate(config)
        self.env_spec = env_spec
        self.seed = int(seed)
        self.device = resolve_device(device)
        probe = make_env(env_spec)
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()
        if not isinstance(self.action_space, spaces.Discrete | spaces.Box):
            raise ValueError(f"{self.config.algo} supports Discrete and Box actions, not "
                             f"{type(self.action_space).__name__}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = ActorCritic(self.observation_space.shape, self.action_space,
                                     self.config.network,
                                     self.config.lstm_hidden if self.config.lstm else None,
                                     self.config.log_std_init,
                                     self.config.share_body).to(self.device)
        self._params = list(self.model.parameters())
        m = self.model
        self._layers = None  # (policy layers, value layers) of the analytic fast path
        if ANALYTIC_GRADS and m.discrete and not m.recurrent and not m.shared:
            pi, vf = mlp_layers(m.pi_body, m.pi_head.linear), mlp_layers(m.vf_body,
                                                                          m.vf_head.linear)
            if pi is not None and vf is not None:
                self._layers = (pi, vf)
                self._params = [flatten_parameters(self._params)]
        self.optimizer = build_optimizer(self._params, self.config.optimizer, self.config.lr)
        for group in self.optimizer.param_groups:  # torch defaults to a per-tensor loop on
            if group.get("foreach") is None and not group.get("fused"):  # CPU: same math,
                group["foreach"] = True  # a dozen kernels instead of ~70 per step
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.obs_rms = RunningMeanStd(self.observation_space.shape) \
            if self.config.normalize_obs else None
        self.ret_rms = RunningMeanStd(()) if self.config.normalize_reward else None
        self.num_timesteps = 0
        self.n_updates = 0
        self._env = None

    # -- envs and rollouts ----------------------------------------------------------------------

    def _start_envs(self) -> None:
        self._env = make_vec_env(self.env_spec, seed=self.seed + self.num_timesteps)
        n = self._env.num_envs
        self._obs = self._normalize_obs(self._env.reset(seed=self.seed + self.num_timesteps)[0],
                                        update=True)
        self._returns = np.zeros(n, dtype=np.float64)  # for reward normalization
        self._tracker = EpisodeTracker(n)
        self._episode_starts = np.ones(n, dtype=bool)
        self._state = None  # the recurrent state, None = zeros
        self._games = records_games(self.env_spec)  # log whole games, not lives
        act = self.action_space
        self.buffer = RolloutBuffer(self.config.n_steps, n, self.observation_space.shape,
                                    self.observation_space.dtype, act.shape,
                                    np.int64 if self.model.discrete else np.float32)
        self._act_low = None if self.model.discrete else act.low
        self._act_high = None if self.model.discrete else act.high

    def _collect_rollout(self, logger) -> list[tuple[float, int]]:
        """Fill the buffer with ``n_steps`` vector steps; returns the finished episodes."""
        buf, model, dev, env, tracker = self.buffer, self.model, self.device, self._env, \
            self._tracker
        buf.reset()
        self._rollout_state = self._state
        finished: list[tuple[float, int]] = []
        fused = None if self._layers is None else fuse_branches(*self._layers)
        n_out = None if fused is None else self._layers[0][-1][0].shape[0]  # policy outputs
        with torch.no_grad():
            while not buf.full:
                obs_t = torch.as_tensor(self._obs, device=dev)
                starts = (torch.as_tensor(self._episode_starts, device=dev)
                          if model.recurrent else None)
                if fused is not None:
                    out = mlp_forward(fused, obs_t)[0]
                    policy_out, values = out[:, :n_out], out[:, n_out]
                else:
                    policy_out, values, self._state = model(obs_t, self._state, starts)
                actions, log_probs = model.sample(policy_out, generator=self.generator)
                actions = actions.cpu().numpy()
                buf.add(self._obs, actions, log_probs.cpu().numpy(), values.cpu().numpy(),
                        self._episode_starts)
                if self._act_low is not None:
                    actions = np.clip(actions, self._act_low, self._act_high)
                obs, rewards, terminated, truncated, infos = env.step(actions)
                self._obs = self._normalize_obs(obs, update=True)
                self.num_timesteps += env.num_envs
                ended = tracker.step(rewards, terminated, truncated)
                if self._games:
                    ended = recorded_episodes(infos)
                if self.ret_rms is not None:
                    rewards = self._normalize_reward(rewards, terminated | truncated,
                                                     tracker.valid)
                buf.record(rewards, terminated, truncated, tracker.valid)
                self._episode_starts = ~tracker.valid
                log_episodes(logger, ended, self.num_timesteps)  # one mean per env step
                finished += ended
            obs_t = torch.as_tensor(self._obs, device=dev)
            starts = torch.as_tensor(self._episode_starts, device=dev) if model.recurrent else None
            vf_state = None if self._state is None else self._state[1]
            last_values = model.value(obs_t, vf_state, starts)[0] if fused is None \
                else mlp_forward(fused, obs_t)[0][:, n_out]
            last_values = last_values.cpu().numpy()
        buf.compute_advantages(last_values, self.config.gamma, self.config.gae_lambda)
        return finished

    def _normalize_obs(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        if self.obs_rms is None:
            return obs
        if update:
            self.obs_rms.update(obs)
        return self.obs_rms.normalize(obs, self.config.clip_obs)

    def _normalize_reward(self, rewards, dones, valid) -> np.ndarray:
        """VecNormalize's reward scaling; NEXT_STEP reset rows neither count nor carry."""
        self._returns = self._returns * self.config.gamma + rewards
        self.ret_rms.update(self._returns[valid])
        self._returns[dones] = 0.0
        return self.ret_rms.scale(rewards, self.config.clip_obs)

    def _minibatches(self, batch_size: int):
        """One epoch of minibatches of the rollout, as dicts of tensors with a ``mask``.

        Feed-forward: the valid rows, shuffled, in chunks of ``batch_size`` (all of them at once,
        unshuffled, when they fit in one). Recurrent: whole sequences of groups of
        ``batch_size // n_steps`` envs, with their rollout-start state and the valid mask.
        """
        d = self._batch
        if not self.model.recurrent:
            n = d["obs"].shape[0]
            if n <= batch_size:
                yield d
                return
            perm = torch.randperm(n, generator=self.generator, device=self.generator.device)
            for i in range(0, n, batch_size):
                idx = perm[i:i + batch_size].to(self.device)
                yield {k: None if v is None else v[idx] for k, v in d.items()}
            return
        n_envs = d["obs"].shape[1]
        per = max(1, batch_size // self.config.n_steps)
        perm = (torch.arange(n_envs) if per >= n_envs else
                torch.randperm(n_envs, generator=self.generator, device=self.generator.device))
        for i in range(0, n_envs, per):
            envs = perm[i:i + per].to(self.device)
            mb = {k: v[:, envs] for k, v in d.items() if k != "state"}
            mb["state"] = tuple(tuple(s[:, envs] for s in pair) for pair in d["state"])
            yield mb

    def _prepare_batch(self) -> None:
        """The rollout as tensors: feed-forward keeps the valid rows only (flattened)."""
        d = self.buffer.torch_view(self.device)
        if self.model.recurrent:
            if self._rollout_state is None:
                n = self.buffer.n_envs
                self._rollout_state = (self.model.pi_lstm.initial_state(n, self.device),
                                       self.model.vf_lstm.initial_state(n, self.device))
            d["state"] = self._rollout_state
            d["mask"] = d.pop("valid")
        else:
            valid = d.pop("valid").flatten()
            keep = None if bool(valid.all()) else valid.nonzero().squeeze(-1)
            d = {k: v.flatten(0, 1) if keep is None else v.flatten(0, 1)[keep]
                 for k, v in d.items() if k != "episode_starts"}
            d["mask"] = None
        self._batch = d

    def _forward(self, mb) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy_out, values) of a minibatch under the current network."""
        if self.model.recurrent:
            return self.model(mb["obs"], mb["state"], mb["episode_starts"])[:2]
        return self.model(mb["obs"])[:2]

    def _analytic_grads(self, mb, clip_range: float | None, advantages: torch.Tensor,
                        with_losses: bool):
        """The fast path's forward + loss + backward: fills ``.grad``, returns
        (log_probs, stacked (policy, value, entropy) losses or None)."""
        cfg = self.config
        clip_range_vf = getattr(cfg, "clip_range_vf", None)
        with torch.no_grad():
            logits, pi_kept = mlp_forward(self._layers[0], mb["obs"], keep=True)
            values, vf_kept = mlp_forward(self._layers[1], mb["obs"], keep=True)
            d_logits, d_values, log_probs, losses = categorical_loss_grads(
                logits, values.squeeze(1), mb["actions"], advantages, mb["returns"],
                mb["log_probs"], mb["values"], clip_range, clip_range_vf, cfg.ent_coef,
                cfg.vf_coef, with_losses)
            mlp_backward(self._layers[0], pi_kept, d_logits)
            mlp_backward(self._layers[1], vf_kept, d_values.unsqueeze(1))
        return log_probs, losses

    def _apply_grads(self) -> None:
        clip_grad_norm(self._params, self.config.max_grad_norm)
        self.optimizer.step()

    def _set_lr(self, progress_remaining: float) -> float:
        lr = self.config.lr
        if self.config.lr_schedule == "linear":
            lr = linear_schedule(lr, progress_remaining)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _update(self, progress_remaining: float) -> dict[str, float]:
        raise NotImplementedError

    # -- the loop -------------------------------------------------------------------------------

    def learn(self, total_steps: int, logger, checkpointer=None, progress=None) -> None:
        if self._env is None:
            self._start_envs()
        horizon = self.config.total_timesteps or total_steps
        t0, steps0 = time.perf_counter(), self.num_timesteps
        sums: dict[str, float] = {}
        n_summed, next_log, next_progress = 0, self.num_timesteps + LOG_EVERY_STEPS, 0.0
        last_return = None
        while self.num_timesteps < total_steps:
            finished = self._collect_rollout(logger)
            if finished:
                last_return = finished[-1][0]
            losses = self._update(1.0 - self.num_timesteps / horizon)
            self.n_updates += 1
            check_finite({k: v for k, v in losses.items() if k not in DIAGNOSTICS},
                         self.num_timesteps)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            n_summed += 1
            if self.num_timesteps >= next_log or self.num_timesteps >= total_steps:
                rate = (self.num_timesteps - steps0) / max(time.perf_counter() - t0, 1e-9)
                record = {f"loss/{k}": v / n_summed for k, v in sums.items()}
                record["time/steps_per_sec"] = rate
                logger.log(record, step=self.num_timesteps)
                sums, n_summed = {}, 0
                next_log = self.num_timesteps + LOG_EVERY_STEPS
            if checkpointer is not None:
                checkpointer.maybe_save(self.num_timesteps, self.state_dict)
            if progress is not None and time.perf_counter() >= next_progress:
                progress(self.num_timesteps, last_return)
                next_progress = time.perf_counter() + 0.25
        if progress is not None:
            progress(self.num_timesteps, last_return)

    # -- acting ---------------------------------------------------------------------------------

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = False):
        """SB3's signature. Recurrent: ``state`` is the policy LSTM's ``(h, c)`` as numpy
        arrays (None: zeros), reset where ``episode_start`` is True."""
        obs = np.asarray(obs, dtype=self.observation_space.dtype)
        single = obs.shape == self.observation_space.shape
        if single:
            obs = obs[None]
        obs = self._normalize_obs(obs)
        with torch.no_grad():
            obs_t = torch.as_tensor(obs, device=self.device)
            if self.model.recurrent:
                starts = np.zeros(len(obs), bool) if episode_start is None else episode_start
                starts = torch.as_tensor(np.asarray(starts, dtype=bool).reshape(len(obs)),
                                         device=self.device)
                pi_state = None if state is None else tuple(
                    torch.as_tensor(s, device=self.device) for s in state)
                policy_out, pi_state = self.model.policy(obs_t, pi_state, starts)
                state = tuple(s.cpu().numpy() for s in pi_state)
            else:
                policy_out, _ = self.model.policy(obs_t)
            actions, _ = self.model.sample(policy_out, deterministic)
        actions = actions.cpu().numpy()
        if not self.model.discrete:
            actions = np.clip(actions, self.action_space.low, self.action_space.high)
        return (actions[0] if single else actions), state

    # -- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "algo": self.config.algo,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "num_timesteps": int(self.num_timesteps),
            "n_updates": int(self.n_updates),
            "generator": self.generator.get_state(),
            "obs_rms": None if self.obs_rms is None else self.obs_rms.state_dict(),
            "ret_rms": None if self.ret_rms is None else self.ret_rms.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_timesteps = int(state["num_timesteps"])
        self.n_updates = int(state["n_updates"])
        self.generator.set_state(state["generator"].cpu())
        for rms, key in ((self.obs_rms, "obs_rms"), (self.ret_rms, "ret_rms")):
            if rms is not None and state.get(key) is not None:
                rms.load_state_dict(state[key])
        if self._env is not None:  # restart the envs where the loaded run stood
            self._env.close()
            self._env = None


class A2C(_OnPolicyAgent):
    """Advantage actor-critic: one gradient step per rollout, SB3's A2C semantics."""

    Config = A2CConfig

    def _update(self, progress_remaining: float) -> dict[str, float]:
        cfg = self.config
        self._set_lr(progress_remaining)
        self._prepare_batch()
        mb = next(self._minibatches(self.buffer.n_steps * self.buffer.n_envs))
        mask = mb["mask"]
        adv = mb["advantages"]
        if cfg.normalize_advantage:
            adv = normalize_advantages(adv, mask)
        if self._layers is not None:
            losses = self._analytic_grads(mb, None, adv, True)[1]
        else:
            policy_out, values = self._forward(mb)
            log_probs = self.model.log_prob(policy_out, mb["actions"])
            entropy_loss = -masked_mean(self.model.entropy(policy_out), mask)
            policy_loss = policy_gradient_loss(log_probs, adv, mask)
            value_loss = clipped_value_loss(values, mb["values"], mb["returns"], None, mask)
            loss = policy_loss + cfg.vf_coef * value_loss
            if cfg.ent_coef:
                loss = loss + cfg.ent_coef * entropy_loss
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            losses = torch.stack([policy_loss, value_loss, entropy_loss]).detach()
        self._apply_grads()
        policy, value, ent = losses.tolist()
        return {"policy": policy, "value": value, "entropy": ent}


class PPO(_OnPolicyAgent):
    """Proximal policy optimization with the clipped surrogate, SB3's PPO semantics.

    The logged losses, approx KL and clip fraction are the means over the last epoch's
    minibatches (the ones closest to the new policy; SB3's approx_kl is the same)."""

    Config = PPOConfig

    def _update(self, progress_remaining: float) -> dict[str, float]:
        cfg = self.config
        self._set_lr(progress_remaining)
        clip = cfg.clip_range
        if cfg.clip_range_schedule == "linear":
            clip = linear_schedule(clip, progress_remaining)
        self._prepare_batch()
        stop = False
        for epoch in range(cfg.n_epochs):
            record = epoch == cfg.n_epochs - 1 or cfg.target_kl is not None
            stats = []
            for mb in self._minibatches(cfg.batch_size):
                mask = mb["mask"]
                if "normalized_advantages" not in mb:  # once when one minibatch is the batch
                    adv = mb["advantages"]
                    mb["normalized_advantages"] = (normalize_advantages(adv, mask)
                                                   if cfg.normalize_advantage else adv)
                adv = mb["normalized_advantages"]
                if self._layers is not None:
                    log_probs, losses = self._analytic_grads(mb, clip, adv, record)
                else:
                    policy_out, values = self._forward(mb)
                    log_probs = self.model.log_prob(policy_out, mb["actions"])
                    policy_loss = clipped_surrogate_loss(log_probs, mb["log_probs"], adv, clip,
                                                         mask)
                    value_loss = clipped_value_loss(values, mb["values"], mb["returns"],
                                                    cfg.clip_range_vf, mask)
                    loss = policy_loss + cfg.vf_coef * value_loss
                    if cfg.ent_coef or record:
                        entropy_loss = -masked_mean(self.model.entropy(policy_out), mask)
                        loss = loss + cfg.ent_coef * entropy_loss if cfg.ent_coef else loss
                        losses = torch.stack([policy_loss, value_loss, entropy_loss]).detach()
                if record:
                    with torch.no_grad():
                        log_ratio = log_probs - mb["log_probs"]
                        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
                        clip_frac = masked_mean(((log_ratio.exp() - 1).abs() > clip).float(),
                                                mask)
                        stats.append(torch.cat([losses, torch.stack([approx_kl, clip_frac])]))
                    # SB3: stop all epochs once the new policy drifted too far from the old
                    stop = cfg.target_kl is not None and approx_kl.item() > 1.5 * cfg.target_kl
                    if stop:
                        break
                if self._layers is None:
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                self._apply_grads()
            if stop:
                break
        policy, value, ent, kl, clip_frac = torch.stack(stats).mean(0).tolist()
        b = self.buffer
        ev = explained_variance(b.values[b.valid], b.returns[b.valid])
        return {"policy": policy, "value": value, "entropy": ent, "approx_kl": kl,
                "clip_fraction": clip_frac,  # EV is NaN when the returns are constant
                "explained_variance": 0.0 if math.isnan(ev) else ev}
