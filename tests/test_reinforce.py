import math
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from agents import agent_configs
from agents.common import evaluate
from agents.reinforce import (
    Reinforce,
    ReinforceConfig,
    policy_gradient_loss,
    reward_to_go,
    standardize,
)
from lab import checkpoint
from lab.checkpoint import NonFiniteLossError
from lab.spec import EnvSpec, load_spec
from lab.tracking import ListLogger

CARTPOLE = EnvSpec(id="CartPole-v1", num_envs=4)

# ---- pure math, against hand-computed values ----------------------------------------------------


def test_reward_to_go_discounts_the_tail():
    # gamma 0.5: G2 = 1, G1 = 2 + 0.5 * 1 = 2.5, G0 = 4 + 0.5 * 2.5 = 5.25
    np.testing.assert_allclose(reward_to_go(np.array([4.0, 2.0, 1.0]), 0.5), [5.25, 2.5, 1.0])


def test_reward_to_go_undiscounted_is_reverse_cumsum():
    np.testing.assert_allclose(reward_to_go(np.ones(4), 1.0), [4.0, 3.0, 2.0, 1.0])


def test_reward_to_go_bootstraps_a_truncated_tail():
    # G3 = bootstrap 4: G2 = 1 + 0.5 * 4 = 3, G1 = 1 + 1.5 = 2.5, G0 = 1 + 1.25 = 2.25
    np.testing.assert_allclose(reward_to_go(np.ones(3), 0.5, bootstrap=4.0), [2.25, 2.5, 3.0])


def test_reward_to_go_empty():
    assert reward_to_go(np.zeros(0), 0.9).shape == (0,)


def test_policy_gradient_loss_value_and_gradient():
    log_probs = torch.tensor([math.log(0.5), math.log(0.25)], requires_grad=True)
    advantages = torch.tensor([1.0, 2.0])
    loss = policy_gradient_loss(log_probs, advantages)
    # -(log 0.5 * 1 + log 0.25 * 2) / 2 = -(-0.693147 - 2.772589) / 2 = 1.732868
    assert loss.item() == pytest.approx(1.732868, abs=1e-6)
    loss.backward()
    # d loss / d log pi_t = -A_t / N
    np.testing.assert_allclose(log_probs.grad.numpy(), [-0.5, -1.0])


def test_policy_gradient_loss_does_not_push_on_the_advantages():
    log_probs = torch.tensor([-1.0, -2.0], requires_grad=True)
    adv = torch.tensor([1.0, -1.0], requires_grad=True)
    policy_gradient_loss(log_probs, adv).backward()
    assert adv.grad is None and log_probs.grad is not None


def test_standardize():
    out = standardize(torch.tensor([1.0, 2.0, 3.0]))
    # mean 2, sample std 1
    np.testing.assert_allclose(out.numpy(), [-1.0, 0.0, 1.0], atol=1e-6)
    assert standardize(torch.tensor([5.0])).item() == 0.0


# ---- collection ---------------------------------------------------------------------------------


def test_collect_keeps_whole_episodes_and_masks_resets():
    # Time limit 5: every episode that does not fall first is truncated and must bootstrap.
    spec = EnvSpec(id="CartPole-v1", num_envs=3, kwargs={"max_episode_steps": 5})
    agent = Reinforce(ReinforceConfig(episodes_per_update=6), spec)
    agent._start_envs()
    logger = ListLogger()
    batch = agent._collect(10_000, logger)
    assert len(batch) >= 6
    lengths = [len(ep.rewards) for ep in batch]
    assert all(1 <= n <= 5 for n in lengths)
    assert all(r == 1.0 for ep in batch for r in ep.rewards)  # no reset step was recorded
    truncated = [ep for ep in batch if ep.final_obs is not None]
    assert truncated and all(len(ep.rewards) == 5 for ep in truncated)
    # every counted step is in a finished or a running episode
    running = sum(len(ep.rewards) for ep in agent._running)
    assert agent.num_timesteps == sum(lengths) + running
    # episodes ending on the same step are logged as one mean (agents.common.log_episodes)
    logged = logger.series("train/episode_length")
    assert 1 <= len(logged) <= len(batch) and all(1 <= v <= 5 for _, v in logged)


def test_learn_continues_across_calls_and_logs_contract_metrics():
    agent = Reinforce(ReinforceConfig(episodes_per_update=2), CARTPOLE, seed=1)
    logger = ListLogger()
    agent.learn(1000, logger)
    first = agent.num_timesteps
    assert 1000 <= first < 1000 + CARTPOLE.num_envs
    agent.learn(2000, logger)
    assert agent.num_timesteps >= 2000
    steps = [s for s, _ in logger.records]
    assert steps == sorted(steps)
    for key in ("train/episode_return", "train/episode_length", "loss/policy", "loss/value",
                "loss/entropy", "time/steps_per_sec"):
        assert logger.series(key), key


def test_gaussian_policy_on_a_box_action_space():
    spec = EnvSpec(id="Pendulum-v1", num_envs=2)
    agent = Reinforce(ReinforceConfig(episodes_per_update=2), spec)
    logger = ListLogger()
    agent.learn(800, logger)  # Pendulum episodes are 200 steps, truncated
    assert len(logger.series("loss/policy")) == 2
    action, _ = agent.predict(np.zeros(3, dtype=np.float32))
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


# ---- checkpoints and the NaN guard --------------------------------------------------------------


def test_checkpoint_round_trip_and_identical_continuation(tmp_path):
    cfg = ReinforceConfig(episodes_per_update=4)
    agent = Reinforce(cfg, CARTPOLE, seed=3)
    agent.learn(1500, ListLogger())
    path = checkpoint.save_atomic(agent.state_dict(), tmp_path / "ckpt.pt")

    resumed = [Reinforce(cfg, CARTPOLE, seed=3) for _ in range(2)]
    for r in resumed:
        r.load_state_dict(checkpoint.load(path))  # weights_only=True
        assert r.num_timesteps == agent.num_timesteps
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0],
                                  resumed[0].predict(obs, deterministic=True)[0])
    for a, b in zip(agent.value.parameters(), resumed[0].value.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert resumed[0].optimizer.state_dict()["state"][0]["step"] > 0

    # save -> load -> continue works, and is reproducible (RNG and counters restored)
    for r in resumed:
        r.learn(3000, ListLogger())
    for a, b in zip(resumed[0].policy.parameters(), resumed[1].policy.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert resumed[0].num_updates == resumed[1].num_updates > agent.num_updates


def test_nan_loss_raises_before_touching_the_weights():
    agent = Reinforce(ReinforceConfig(episodes_per_update=2), CARTPOLE)
    with torch.no_grad():
        agent.value.head.linear.bias.fill_(float("nan"))
    before = [p.clone() for p in agent.policy.parameters()]
    with pytest.raises(NonFiniteLossError):
        agent.learn(5000, ListLogger())
    for a, b in zip(before, agent.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b)


# ---- learning -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    spec = load_spec("cartpole-reinforce-fast", [], agent_configs())
    agent = Reinforce(spec.agent, spec.env, seed=spec.train.seed)
    start = time.perf_counter()
    agent.learn(spec.train.steps, ListLogger())
    return agent, spec, time.perf_counter() - start


@pytest.mark.slow
def test_fast_preset_learns_cartpole(trained):
    agent, spec, _ = trained
    returns = evaluate(agent, spec.env, episodes=20)
    # CartPole-v1 caps at 500 and counts 475 as solved; random play scores about 22.
    assert np.mean(returns) >= 450, returns


@pytest.mark.slow
def test_sb3_evaluate_policy_on_trained_agent(trained):
    agent, _, _ = trained
    env = Monitor(gym.make("CartPole-v1"))
    env.reset(seed=0)  # SB3 resets without a seed: the start states follow from this one
    mean, _ = evaluate_policy(agent, env, n_eval_episodes=20, deterministic=True)
    env.close()
    assert mean >= 450


def test_presets_validate():
    for name in ("cartpole-reinforce", "cartpole-reinforce-fast"):
        spec = load_spec(name, [], agent_configs())
        assert spec.agent.algo == "reinforce" and spec.env.id == "CartPole-v1"
