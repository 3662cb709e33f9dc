import math

import numpy as np
import pytest
import torch
from stable_baselines3.common.evaluation import evaluate_policy

from agents import agent_class, agent_configs
from agents.sb3 import SB3A2C, SB3DQN, SB3PPO, sb3_kwargs, schedule
from lab import checkpoint
from lab.checkpoint import NonFiniteLossError
from lab.spec import EnvSpec, load_spec
from lab.tracking import ListLogger

# Small, quick settings: short rollouts so that a few thousand steps hold many updates.
QUICK = {
    "sb3.dqn": (SB3DQN, {"learning_starts": 200, "train_freq": 16, "gradient_steps": 4,
                         "target_update_interval": 100, "batch_size": 32}, 1),
    "sb3.a2c": (SB3A2C, {}, 4),
    "sb3.ppo": (SB3PPO, {"n_steps": 64, "batch_size": 64, "n_epochs": 2}, 4),
}
OURS = {"sb3.dqn": "dqn", "sb3.a2c": "a2c", "sb3.ppo": "ppo"}
LOSSES = {"sb3.dqn": {"loss/td"},
          "sb3.a2c": {"loss/policy", "loss/value", "loss/entropy"},
          "sb3.ppo": {"loss/policy", "loss/value", "loss/entropy", "loss/approx_kl",
                      "loss/clip_fraction", "loss/explained_variance"}}


def make(algo, seed=0, **overrides):
    cls, cfg, num_envs = QUICK[algo]
    return cls({**cfg, **overrides}, EnvSpec(id="CartPole-v1", num_envs=num_envs), seed=seed)


# ---- configs mirror our agents ------------------------------------------------------------------


@pytest.mark.parametrize("algo", list(OURS))
def test_config_fields_are_our_agents_fields_with_our_defaults(algo):
    ours = agent_class(OURS[algo]).Config.model_fields
    theirs = agent_class(algo).Config.model_fields
    assert set(theirs) <= set(ours), set(theirs) - set(ours)
    # what ours has beyond SB3: only the parameters of options SB3 does not offer
    assert set(ours) - set(theirs) <= {"per_alpha", "per_beta", "per_eps", "lstm_hidden"}
    for name in set(theirs) - {"algo"}:
        assert theirs[name].get_default(call_default_factory=True) == \
            ours[name].get_default(call_default_factory=True), name


@pytest.mark.parametrize("algo", list(OURS))
def test_presets_equal_ours_but_for_algo(algo):
    configs = agent_configs()
    ours = load_spec(f"cartpole-{OURS[algo]}", [], configs)
    theirs = load_spec(f"cartpole-sb3-{OURS[algo]}", [], configs)
    assert theirs.agent.algo == algo
    assert theirs.env == ours.env and theirs.train == ours.train
    mine = theirs.agent.model_dump()
    assert {k: v for k, v in ours.agent.model_dump().items() if k in mine and k != "algo"} == \
        {k: v for k, v in mine.items() if k != "algo"}


def test_rl_zoo_settings_reach_sb3():
    configs = agent_configs()
    dqn = sb3_kwargs(load_spec("cartpole-sb3-dqn", [], configs).agent)
    assert dqn["learning_rate"] == 2.3e-3 and dqn["train_freq"] == 256
    assert dqn["gradient_steps"] == 128 and dqn["target_update_interval"] == 10
    assert dqn["policy_kwargs"]["net_arch"] == [256, 256]
    assert dqn["policy_kwargs"]["activation_fn"] is torch.nn.ReLU
    ppo = sb3_kwargs(load_spec("cartpole-sb3-ppo", [], configs).agent)
    assert ppo["learning_rate"](0.5) == pytest.approx(5e-4)  # lin_1e-3
    assert ppo["clip_range"](0.25) == pytest.approx(0.05)  # lin_0.2
    assert ppo["policy_kwargs"]["net_arch"] == {"pi": [64, 64], "vf": [64, 64]}
    assert ppo["policy_kwargs"]["optimizer_kwargs"]["eps"] == 1e-5
    a2c = sb3_kwargs(load_spec("cartpole-sb3-a2c", [], configs).agent)
    assert a2c["policy_kwargs"]["optimizer_class"] is torch.optim.RMSprop
    assert a2c["policy_kwargs"]["optimizer_kwargs"]["alpha"] == 0.99
    assert a2c["learning_rate"] == 7e-4 and a2c["ent_coef"] == 0.0


def test_schedule():
    assert schedule(0.3, "constant") == 0.3
    assert schedule(1e-3, "linear")(1.0) == pytest.approx(1e-3)
    assert schedule(1e-3, "linear")(0.0) == 0.0


def test_unsupported_options_are_refused():
    with pytest.raises(ValueError):
        SB3DQN.Config(double_q=True)
    with pytest.raises(ValueError):
        SB3PPO.Config(network={"type": "mlp", "init": "xavier"})


# ---- learning through the contract --------------------------------------------------------------


@pytest.mark.parametrize("algo", list(QUICK))
def test_learn_logs_our_metrics_at_env_steps(algo):
    agent = make(algo)
    num_envs = agent.env.num_envs
    logger = ListLogger()
    agent.learn(2500, logger)
    agent.learn(4000, logger)  # continues where it stopped
    assert 4000 <= agent.num_timesteps < 4000 + 256
    steps = [s for s, _ in logger.records]
    assert steps == sorted(steps) and steps[-1] <= agent.num_timesteps
    assert all(s % num_envs == 0 for s in steps)
    keys = {k for _, m in logger.records for k in m}
    assert {k for k in keys if k.startswith("loss/")} == LOSSES[algo]
    assert "time/steps_per_sec" in keys
    returns = logger.series("train/episode_return")
    lengths = logger.series("train/episode_length")
    assert len(returns) == len(lengths) > 10
    assert all(r == length for (_, r), (_, length) in zip(returns, lengths, strict=True))
    if num_envs == 1:  # one env: an episode ends at the sum of the lengths so far
        np.testing.assert_array_equal([s for s, _ in lengths],
                                      np.cumsum([v for _, v in lengths]))
    for _, metrics in logger.records:
        assert all(math.isfinite(v) for v in metrics.values())


def test_dqn_exploration_follows_total_timesteps_across_chunks():
    agent = make("sb3.dqn", total_timesteps=2000, exploration_fraction=0.5)
    agent.learn(256, ListLogger())
    agent.learn(512, ListLogger())
    # 512 of 2000 steps: epsilon falls from 1 to 0.05 over the first 1000
    assert agent.num_timesteps == 512
    assert agent.model.exploration_rate == pytest.approx(1.0 - 0.95 * 512 / 1000)


def test_ppo_linear_lr_follows_total_timesteps_across_chunks():
    agent = make("sb3.ppo", lr=1e-3, lr_schedule="linear", total_timesteps=4096)
    agent.learn(1024, ListLogger())
    agent.learn(2048, ListLogger())
    # the last update ran at 2048 of 4096 steps
    assert agent.model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


@pytest.mark.parametrize("algo", list(QUICK))
def test_non_finite_loss_raises(algo):
    agent = make(algo)
    train = agent.model.train

    def poisoned_train(*args, **kwargs):
        train(*args, **kwargs)
        key = "train/loss" if algo == "sb3.dqn" else "train/value_loss"
        agent.model.logger.record(key, float("nan"))

    agent.model.train = poisoned_train
    with pytest.raises(NonFiniteLossError):
        agent.learn(3000, ListLogger())


class _Checkpointer:
    def __init__(self):
        self.saved = []

    def maybe_save(self, step, state_fn):
        self.saved.append((step, state_fn()))


def test_learn_checkpoints_and_reports_progress():
    agent = make("sb3.ppo")
    ckpt, seen = _Checkpointer(), []
    agent.learn(1024, ListLogger(), ckpt, lambda step, ret: seen.append(step))
    assert [s for s, _ in ckpt.saved][-1] == agent.num_timesteps
    assert ckpt.saved[-1][1]["num_timesteps"] == agent.num_timesteps
    assert seen[-1] == agent.num_timesteps


# ---- checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", list(QUICK))
def test_state_round_trip_and_continue(algo, tmp_path):
    agent = make(algo, seed=1)
    agent.learn(1500, ListLogger())
    state = agent.state_dict(include_replay=True) if algo == "sb3.dqn" else agent.state_dict()
    path = checkpoint.save_atomic(state, tmp_path / "ckpt.pt")

    resumed = make(algo, seed=1)
    resumed.load_state_dict(checkpoint.load(path))  # weights_only=True
    assert resumed.num_timesteps == agent.num_timesteps
    assert resumed.model._n_updates == agent.model._n_updates > 0
    for (name, a), b in zip(agent.model.policy.state_dict().items(),
                            resumed.model.policy.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    opt_a = agent.model.policy.optimizer.state_dict()["state"]
    opt_b = resumed.model.policy.optimizer.state_dict()["state"]
    for k in opt_a:
        for name, v in opt_a[k].items():
            torch.testing.assert_close(v, opt_b[k][name])
    obs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0],
                                  resumed.predict(obs, deterministic=True)[0])
    if algo == "sb3.dqn":
        assert resumed.model.exploration_rate == agent.model.exploration_rate
        assert resumed.model.replay_buffer.size() == agent.model.replay_buffer.size()
        np.testing.assert_array_equal(resumed.model.replay_buffer.rewards,
                                      agent.model.replay_buffer.rewards)

    logger = ListLogger()
    resumed.learn(3000, logger)
    assert resumed.num_timesteps >= 3000
    assert min(s for s, _ in logger.records) > agent.num_timesteps


def test_vec_normalize_statistics_round_trip(tmp_path):
    agent = make("sb3.ppo", normalize_obs=True, normalize_reward=True)
    agent.learn(1024, ListLogger())
    assert agent.normalizer.obs_rms.count > 1000
    path = checkpoint.save_atomic(agent.state_dict(), tmp_path / "ckpt.pt")
    resumed = make("sb3.ppo", normalize_obs=True, normalize_reward=True)
    resumed.load_state_dict(checkpoint.load(path))
    np.testing.assert_array_equal(resumed.normalizer.obs_rms.mean, agent.normalizer.obs_rms.mean)
    assert resumed.normalizer.ret_rms.var == agent.normalizer.ret_rms.var
    obs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0],
                                  resumed.predict(obs, deterministic=True)[0])


def test_replay_only_on_request():
    agent = make("sb3.dqn")
    ckpt = _Checkpointer()
    agent.learn(300, ListLogger(), ckpt)
    assert "replay" not in agent.state_dict() and "replay" not in ckpt.saved[-1][1]
    assert agent.state_dict(include_replay=True)["replay"]["rewards"].shape[0] == 304
    ckpt.include_replay = True  # what the runner sets from train.save_replay
    agent.learn(400, ListLogger(), ckpt)
    assert ckpt.saved[-1][1]["replay"]["rewards"].shape[0] == agent.num_timesteps == 400


def test_sb3_evaluate_policy_runs_on_the_agent():
    agent = make("sb3.ppo")
    agent.learn(512, ListLogger())
    mean, std = evaluate_policy(agent, agent.env, n_eval_episodes=3)
    assert mean > 0 and std >= 0


@pytest.mark.parametrize("algo", list(OURS))
def test_default_config_is_sb3_with_its_defaults(algo):
    """Our defaults map onto SB3's own defaults: the same seed trains the same weights."""
    import stable_baselines3
    from stable_baselines3.common.env_util import make_vec_env

    num_envs = 1
    agent = agent_class(algo)({}, EnvSpec(id="CartPole-v1", num_envs=num_envs), seed=5)
    agent.learn(1000, ListLogger())
    name = algo.split(".")[1].upper()
    env = make_vec_env("CartPole-v1", n_envs=num_envs, seed=5)
    raw = getattr(stable_baselines3, name)("MlpPolicy", env, seed=5, device="cpu")
    raw.learn(1000)
    assert raw.num_timesteps == agent.num_timesteps
    ours, theirs = agent.model.policy.state_dict(), raw.policy.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0, msg=key)
    fresh = agent_class(algo)({}, EnvSpec(id="CartPole-v1", num_envs=num_envs), seed=5)
    assert any(not torch.equal(v, ours[k]) for k, v in fresh.model.policy.state_dict().items())
