"""Stable-Baselines3's own DQN, A2C and PPO behind the lab's agent contract (the baselines).

``agent.algo=sb3.dqn|sb3.a2c|sb3.ppo`` runs ``stable_baselines3.DQN/A2C/PPO`` unchanged. The
configs are subclasses of our own agents' configs (``agents/dqn.py``,
``agents/actor_critic.py``), whose names are SB3's hyperparameter names, so a preset switches
between ``dqn`` and ``sb3.dqn`` by changing ``algo`` alone (``tests/test_sb3_agents.py``
checks this). Switches for what SB3 does not have (double/dueling/prioritized DQN, an LSTM)
exist only fixed off, so that a preset which leaves them off runs on either.

How the pieces meet:

- Envs: SB3's ``make_vec_env`` (a ``DummyVecEnv``, ``SubprocVecEnv`` for
  ``vectorization: async``) of ``env.id`` with ``env.kwargs``; it adds SB3's ``Monitor``, whose
  ``info["episode"]`` gives the finished episodes. ``normalize_obs`` / ``normalize_reward``
  (A2C, PPO) wrap it in SB3's ``VecNormalize``; ``predict`` then normalizes what it is given.
- Metrics: a ``BaseCallback`` logs ``train/episode_return`` / ``train/episode_length`` of the
  finished episodes (``agents.common.log_episodes``: one mean per env step). SB3's ``train()``
  writes its losses into ``model.logger.name_to_value`` after each rollout; the callback takes
  them out at the start of the next rollout (and at the end of training), renames them to ours
  (``LOSS_NAMES``), checks them with ``check_finite`` and logs their mean with
  ``time/steps_per_sec`` every ``LOG_EVERY_STEPS`` env steps. SB3 itself writes nowhere (a
  logger without outputs).
- Schedules: SB3 measures progress against the end of the current ``learn()`` call; like our
  agents, ``total_timesteps`` fixes the run length
  instead, so a run cut into chunks follows one schedule.
- Checkpoints: ``state_dict()`` holds the policy's tensors, the optimizer state, SB3's counters
  and schedule position (and for DQN the exploration rate and, on request, the replay buffer),
  nothing pickled: it loads with ``weights_only=True``. A loaded agent starts fresh episodes.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger as SB3Logger

from agents.actor_critic import A2CConfig, PPOConfig, _default_network
from agents.common import log_episodes, resolve_device
from agents.dqn import DQNConfig
from lab.backbone import MLPSpec, OptimizerSpec
from lab.checkpoint import check_finite, generator_state, set_generator_state

LOG_EVERY_STEPS = 2048  # env steps between two loss / speed records (as agents/actor_critic.py)

ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU,
               "gelu": torch.nn.GELU, "leaky_relu": torch.nn.LeakyReLU}


# ---- configs: our agents' names and defaults ---------------------------------------------------


def _sb3_init(v: MLPSpec, allowed: tuple[str, ...]) -> MLPSpec:
    if v.init not in allowed:
        raise ValueError(f"SB3 offers network.init {' or '.join(allowed)} here, not {v.init}")
    return v


class SB3DQNConfig(DQNConfig):
    """Our DQNConfig (same names, meanings, defaults), less what SB3's DQN lacks: a plain MLP
    with torch's default init, Huber loss, no double / dueling / prioritized variants."""

    algo: Literal["sb3.dqn"] = "sb3.dqn"
    network: MLPSpec = MLPSpec(hidden=[64, 64], activation="relu")
    loss: Literal["huber"] = "huber"
    double_q: Literal[False] = False
    dueling: Literal[False] = False
    prioritized: Literal[False] = False
    frame_replay: Literal[False] | None = None  # SB3's own buffer stores what it is given

    @field_validator("network")
    @classmethod
    def _init(cls, v: MLPSpec) -> MLPSpec:
        return _sb3_init(v, ("default",))


class _SB3OnPolicy(BaseModel):
    """What SB3's A2C and PPO lack of ours: no LSTM option, no shared body; a plain MLP,
    orthogonal (ortho_init) or torch's default init."""

    network: MLPSpec = Field(default_factory=_default_network)
    lstm: Literal[False] = False
    share_body: Literal[False] = False  # separate pi / vf MLPs, as SB3's MlpPolicy

    @field_validator("network")
    @classmethod
    def _init(cls, v: MLPSpec) -> MLPSpec:
        return _sb3_init(v, ("orthogonal", "default"))


class SB3A2CConfig(_SB3OnPolicy, A2CConfig):
    algo: Literal["sb3.a2c"] = "sb3.a2c"


class SB3PPOConfig(_SB3OnPolicy, PPOConfig):
    algo: Literal["sb3.ppo"] = "sb3.ppo"


# ---- config -> SB3 keyword arguments -----------------------------------------------------------


def optimizer_kwargs(spec: OptimizerSpec) -> tuple[type[torch.optim.Optimizer], dict]:
    """Our optimizer spec as SB3's policy_kwargs ``optimizer_class`` / ``optimizer_kwargs``."""
    wd = spec.weight_decay
    if spec.type == "adam":
        return torch.optim.Adam, {"eps": spec.eps, "betas": tuple(spec.betas), "weight_decay": wd}
    if spec.type == "rmsprop":
        return torch.optim.RMSprop, {"alpha": spec.alpha, "eps": spec.eps,
                                     "momentum": spec.momentum, "weight_decay": wd}
    if spec.type == "sgd":
        return torch.optim.SGD, {"momentum": spec.momentum, "nesterov": spec.nesterov,
                                 "weight_decay": wd}
    return torch.optim.Adagrad, {"eps": spec.eps, "weight_decay": wd}


def schedule(value: float, kind: str):
    """A constant, or rl-zoo3's ``lin_<value>``: SB3's callable of progress_remaining (1 -> 0)."""
    if kind == "constant":
        return value
    return lambda progress_remaining: value * min(max(progress_remaining, 0.0), 1.0)


def sb3_kwargs(config) -> dict:
    """The SB3 constructor's keyword arguments for one of the configs above."""
    optimizer_class, opt_kwargs = optimizer_kwargs(config.optimizer)
    policy_kwargs = {"activation_fn": ACTIVATIONS[config.network.activation],
                     "optimizer_class": optimizer_class, "optimizer_kwargs": opt_kwargs}
    hidden = list(config.network.hidden)
    common = {"gamma": config.gamma}
    if config.algo == "sb3.dqn":
        policy_kwargs["net_arch"] = hidden
        return {**common, "learning_rate": config.lr, "buffer_size": config.buffer_size,
                "learning_starts": config.learning_starts, "batch_size": config.batch_size,
                "tau": config.tau, "train_freq": config.train_freq,
                "gradient_steps": config.gradient_steps, "n_steps": config.n_step,
                "target_update_interval": config.target_update_interval,
                "exploration_fraction": config.exploration_fraction,
                "exploration_initial_eps": config.exploration_initial_eps,
                "exploration_final_eps": config.exploration_final_eps,
                "max_grad_norm": (float("inf") if config.max_grad_norm is None
                                  else config.max_grad_norm),
                "policy_kwargs": policy_kwargs}
    # Separate policy and value MLPs of the same widths, as our ActorCritic.
    policy_kwargs.update(net_arch={"pi": hidden, "vf": hidden},
                         ortho_init=config.network.init == "orthogonal",
                         log_std_init=config.log_std_init)
    kwargs = {**common, "learning_rate": schedule(config.lr, config.lr_schedule),
              "n_steps": config.n_steps, "gae_lambda": config.gae_lambda,
              "ent_coef": config.ent_coef, "vf_coef": config.vf_coef,
              "max_grad_norm": config.max_grad_norm,
              "normalize_advantage": config.normalize_advantage,
              "policy_kwargs": policy_kwargs}
    if config.algo == "sb3.ppo":
        kwargs.update(batch_size=config.batch_size, n_epochs=config.n_epochs,
                      clip_range=schedule(config.clip_range, config.clip_range_schedule),
                      clip_range_vf=config.clip_range_vf, target_kl=config.target_kl)
    return kwargs


# ---- metrics: SB3's logger values -> ours ------------------------------------------------------

# SB3 key -> our loss name (logged as loss/<name>), per algorithm, as our agents name them.
LOSS_NAMES = {
    "sb3.dqn": {"train/loss": "td"},
    "sb3.a2c": {"train/policy_loss": "policy", "train/value_loss": "value",
                "train/entropy_loss": "entropy"},
    "sb3.ppo": {"train/policy_gradient_loss": "policy", "train/value_loss": "value",
                "train/entropy_loss": "entropy", "train/approx_kl": "approx_kl",
                "train/clip_fraction": "clip_fraction",
                "train/explained_variance": "explained_variance"},
}


class _LabCallback(BaseCallback):
    """Episodes, losses, speed, the NaN guard, checkpoints and progress, from inside SB3."""

    def __init__(self, agent, logger, checkpointer=None, progress=None):
        super().__init__()
        self.agent, self.lab_logger = agent, logger
        self.checkpointer, self.progress = checkpointer, progress
        self.names = LOSS_NAMES[agent.config.algo]
        self.sums: dict[str, float] = {}
        self.count = 0
        self.next_progress = 0.0

    def _on_training_start(self) -> None:
        self.clock, self.clock_steps = time.perf_counter(), self.model.num_timesteps
        self.next_log = self.model.num_timesteps + LOG_EVERY_STEPS

    def _on_step(self) -> bool:
        finished = [(float(info["episode"]["r"]), int(info["episode"]["l"]))
                    for info in self.locals["infos"] if "episode" in info]
        if finished:
            log_episodes(self.lab_logger, finished, self.model.num_timesteps)
            self.agent.last_return = finished[-1][0]
        return True

    def _on_rollout_start(self) -> None:
        # SB3 calls this after train(): the losses of that update are in its logger now.
        self._after_update(final=False)

    def _on_training_end(self) -> None:
        self._after_update(final=True)

    def _after_update(self, final: bool) -> None:
        step = self.model.num_timesteps
        sb3 = self.model.logger
        losses = {name: float(sb3.name_to_value.pop(key)) for key, name in self.names.items()
                  if key in sb3.name_to_value}
        for key in self.names:
            sb3.name_to_count.pop(key, None)
            sb3.name_to_excluded.pop(key, None)
        if losses:
            check_finite(losses, step)
            for name, value in losses.items():
                self.sums[name] = self.sums.get(name, 0.0) + value
            self.count += 1
        if self.count and (step >= self.next_log or final):
            self._flush(step)
        if self.checkpointer is not None:
            self.checkpointer.maybe_save(step, self.agent.state_dict)
        now = time.perf_counter()
        if self.progress is not None and (now >= self.next_progress or final):
            self.progress(step, self.agent.last_return)
            self.next_progress = now + 0.25

    def _flush(self, step: int) -> None:
        record = {f"loss/{k}": v / self.count for k, v in self.sums.items()}
        now = time.perf_counter()
        record["time/steps_per_sec"] = (step - self.clock_steps) / max(now - self.clock, 1e-9)
        if self.agent.config.algo == "sb3.dqn":
            record["train/epsilon"] = float(self.model.exploration_rate)
        self.lab_logger.log(record, step=step)
        self.sums, self.count = {}, 0
        self.clock, self.clock_steps = now, step
        self.next_log = step + LOG_EVERY_STEPS


# ---- the agents --------------------------------------------------------------------------------


class _SB3Agent:
    """One SB3 algorithm behind the lab contract; subclasses name the class and config."""

    Config: type[BaseModel]
    sb3_class_name: str

    def __init__(self, config, env_spec, *, device: str = "cpu", seed: int = 0):
        import stable_baselines3
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

        import envs  # noqa: F401  (registers the lab/... ids with gymnasium)

        self.config = self.Config.model_validate(config)
        self.env_spec, self.seed = env_spec, int(seed)
        self.env = make_vec_env(
            env_spec.id, n_envs=env_spec.num_envs, seed=self.seed, env_kwargs=dict(env_spec.kwargs),
            vec_env_cls=SubprocVecEnv if env_spec.vectorization == "async" else DummyVecEnv)
        cfg = self.config
        if getattr(cfg, "normalize_obs", False) or getattr(cfg, "normalize_reward", False):
            self.env = VecNormalize(self.env, norm_obs=cfg.normalize_obs,
                                    norm_reward=cfg.normalize_reward, clip_obs=cfg.clip_obs,
                                    clip_reward=cfg.clip_obs, gamma=cfg.gamma)
        self.normalizer = self.env if isinstance(self.env, VecNormalize) else None
        algo = getattr(stable_baselines3, self.sb3_class_name)
        self.model = algo("MlpPolicy", self.env, seed=self.seed, verbose=0,
                          device=str(resolve_device(device)), **sb3_kwargs(self.config))
        self.model.set_logger(SB3Logger(folder=None, output_formats=[]))  # SB3 writes nowhere
        self.horizon: int | None = None
        self.last_return: float | None = None
        self.save_replay = False  # DQN: the runner sets it from train.save_replay
        # Schedules run over ``horizon`` env steps, not to the end of each learn() call.
        update_progress = self.model._update_current_progress_remaining
        self.model._update_current_progress_remaining = (
            lambda num_timesteps, total: update_progress(num_timesteps, self.horizon or total))

    @property
    def num_timesteps(self) -> int:
        return int(self.model.num_timesteps)

    def _configured_horizon(self) -> int | None:
        return getattr(self.config, "total_timesteps", None)

    def learn(self, total_steps: int, logger, checkpointer=None, progress=None):
        self.horizon = self._configured_horizon() or int(total_steps)
        # The runner marks train.save_replay on the checkpointer: periodic saves honour it too.
        self.save_replay = bool(getattr(checkpointer, "include_replay", self.save_replay))
        if self.num_timesteps >= total_steps:
            return self
        callback = _LabCallback(self, logger, checkpointer, progress)
        self.model.learn(total_steps - self.num_timesteps, callback=callback,
                         reset_num_timesteps=False, log_interval=None)
        return self

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = False):
        if self.normalizer is not None:  # the policy acts on normalized observations
            obs = self.normalizer.normalize_obs(np.asarray(obs))
        return self.model.predict(obs, state=state, episode_start=episode_start,
                                  deterministic=deterministic)

    # ---- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict:
        m = self.model
        return {
            "algo": self.config.algo,
            "policy": m.policy.state_dict(),
            "optimizer": m.policy.optimizer.state_dict(),
            "num_timesteps": int(m.num_timesteps),
            "n_updates": int(m._n_updates),
            "episode_num": int(m._episode_num),
            "progress_remaining": float(m._current_progress_remaining),
            "horizon": self.horizon,
            "action_space_rng": generator_state(m.action_space.np_random),
            "obs_rms": (None if self.normalizer is None
                        else _rms_state(self.normalizer.obs_rms)),
            "ret_rms": (None if self.normalizer is None
                        else _rms_state(self.normalizer.ret_rms)),
        }

    def load_state_dict(self, state: dict) -> None:
        m = self.model
        m.policy.load_state_dict(state["policy"])
        m.policy.optimizer.load_state_dict(state["optimizer"])
        m.num_timesteps = int(state["num_timesteps"])
        m._n_updates = int(state["n_updates"])
        m._episode_num = int(state["episode_num"])
        m._current_progress_remaining = float(state["progress_remaining"])
        self.horizon = state["horizon"]
        set_generator_state(m.action_space.np_random, state["action_space_rng"])
        if self.normalizer is not None:
            _load_rms_state(self.normalizer.obs_rms, state["obs_rms"])
            _load_rms_state(self.normalizer.ret_rms, state["ret_rms"])
        # Fresh episodes, seeded apart from those already played: SB3 resets on the next learn.
        m._last_obs = None
        self.env.seed(self.seed + m.num_timesteps)

    def close(self) -> None:
        self.env.close()


class SB3DQN(_SB3Agent):
    Config = SB3DQNConfig
    sb3_class_name = "DQN"

    def _configured_horizon(self) -> int | None:
        return self.config.total_timesteps

    def state_dict(self, include_replay: bool | None = None) -> dict:
        state = super().state_dict()
        state["exploration_rate"] = float(self.model.exploration_rate)
        state["n_calls"] = int(self.model._n_calls)
        if self.save_replay if include_replay is None else include_replay:
            state["replay"] = _replay_state(self.model.replay_buffer)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.model.exploration_rate = float(state["exploration_rate"])
        self.model._n_calls = int(state["n_calls"])
        if "replay" in state:
            _load_replay_state(self.model.replay_buffer, state["replay"])


class SB3A2C(_SB3Agent):
    Config = SB3A2CConfig
    sb3_class_name = "A2C"


class SB3PPO(_SB3Agent):
    Config = SB3PPOConfig
    sb3_class_name = "PPO"


# ---- checkpoint helpers: numpy RNG and replay buffer as weights_only-safe values ---------------

_REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _replay_state(buffer) -> dict:
    """The filled rows of an SB3 ReplayBuffer as tensors, with its position."""
    size = buffer.buffer_size if buffer.full else buffer.pos
    state = {"pos": int(buffer.pos), "full": bool(buffer.full)}
    for name in _REPLAY_ARRAYS:
        array = getattr(buffer, name, None)
        if array is not None:  # next_observations is None with optimize_memory_usage
            state[name] = torch.from_numpy(np.ascontiguousarray(array[:size]))
    return state


def _load_replay_state(buffer, state: dict) -> None:
    for name in _REPLAY_ARRAYS:
        if name in state:
            rows = state[name].numpy()
            getattr(buffer, name)[: len(rows)] = rows
    buffer.pos, buffer.full = int(state["pos"]), bool(state["full"])


def _rms_state(rms) -> dict:
    return {"mean": torch.from_numpy(np.array(rms.mean, dtype=np.float64)),
            "var": torch.from_numpy(np.array(rms.var, dtype=np.float64)),
            "count": float(rms.count)}


def _load_rms_state(rms, state: dict) -> None:
    rms.mean = state["mean"].numpy().copy()
    rms.var = state["var"].numpy().copy()
    rms.count = float(state["count"])

