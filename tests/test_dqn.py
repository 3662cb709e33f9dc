"""DQN: the math against hand-computed values, SB3's counting semantics, NEXT_STEP handling,
learning CartPole, checkpoint round trip, the NaN guard, SB3's evaluate_policy."""

import math
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents import agent_configs
from agents.common import evaluate
from agents.dqn import (
    DQN,
    DQNConfig,
    double_q_next_q,
    linear_schedule,
    max_next_q,
    q_loss,
    q_loss_and_grad,
    td_target,
)
from lab.backbone.fast_mlp import adam_step, clip_grad_norm
from lab.checkpoint import Checkpointer, NonFiniteLossError, load, save_atomic
from lab.runner import with_horizon
from lab.spec import EnvSpec, load_spec
from lab.tracking import ListLogger

CARTPOLE = EnvSpec(id="CartPole-v1")


def small_config(**overrides) -> DQNConfig:
    base = dict(network={"type": "mlp", "hidden": [16], "activation": "relu"},
                learning_starts=50, batch_size=8, train_freq=10, gradient_steps=2,
                target_update_interval=5, total_timesteps=1000)
    return DQNConfig(**(base | overrides))


# ---- pure math --------------------------------------------------------------------------------


def test_linear_schedule_hand_values():
    assert linear_schedule(0, 1.0, 0.04, 8000) == 1.0
    assert linear_schedule(4000, 1.0, 0.04, 8000) == pytest.approx(0.52)
    assert linear_schedule(8000, 1.0, 0.04, 8000) == pytest.approx(0.04)
    assert linear_schedule(20000, 1.0, 0.04, 8000) == 0.04


def test_linear_schedule_matches_sb3_exploration_schedule():
    from stable_baselines3.common.utils import LinearSchedule

    sb3 = LinearSchedule(1.0, 0.04, 0.16)
    for step in (0, 1, 1000, 7999, 8000, 8001, 30000, 50000):
        assert linear_schedule(step, 1.0, 0.04, 0.16 * 50000) == pytest.approx(
            sb3(1.0 - step / 50000))


def test_td_target_hand_values():
    got = td_target(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.99, 0.99, 0.5]),
                    torch.tensor([0.0, 1.0, 0.0]), torch.tensor([10.0, 10.0, 5.0]))
    torch.testing.assert_close(got, torch.tensor([10.9, 1.0, 2.5]))


def test_next_values_dqn_and_double_dqn_hand_values():
    online = torch.tensor([[1.0, 3.0], [4.0, 2.0]])
    target = torch.tensor([[10.0, 20.0], [40.0, 30.0]])
    torch.testing.assert_close(max_next_q(target), torch.tensor([20.0, 40.0]))
    # double DQN: the online net picks (1, 0), the target net values them
    torch.testing.assert_close(double_q_next_q(online, target), torch.tensor([20.0, 40.0]))
    online = torch.tensor([[3.0, 1.0], [2.0, 4.0]])
    torch.testing.assert_close(double_q_next_q(online, target), torch.tensor([10.0, 30.0]))


def test_q_loss_hand_values():
    q, target = torch.tensor([0.0, 0.0]), torch.tensor([0.5, 3.0])
    # Huber (delta 1): 0.5 * 0.5^2 = 0.125 and 3 - 0.5 = 2.5
    assert q_loss(q, target).item() == pytest.approx((0.125 + 2.5) / 2)
    assert q_loss(q, target, weights=torch.tensor([1.0, 0.5])).item() == pytest.approx(
        (0.125 + 1.25) / 2)
    assert q_loss(q, target, "mse").item() == pytest.approx((0.25 + 9.0) / 2)


@pytest.mark.parametrize("kind", ["huber", "mse"])
@pytest.mark.parametrize("weighted", [False, True])
def test_q_loss_and_grad_match_autograd(kind, weighted):
    q = torch.tensor([0.0, 2.0, -1.0, 0.3], requires_grad=True)
    target = torch.tensor([0.5, 0.0, 1.5, 0.2])
    weights = torch.tensor([1.0, 0.5, 2.0, 1.0]) if weighted else None
    reference = q_loss(q, target, kind, weights)
    reference.backward()
    loss, grad = q_loss_and_grad(q.detach(), target, kind, weights)
    assert loss.item() == pytest.approx(reference.item())
    torch.testing.assert_close(grad, q.grad)
    if kind == "huber" and not weighted:  # by hand: clamp(q - target, -1, 1) / 4
        torch.testing.assert_close(grad, torch.tensor([-0.5, 1.0, -1.0, 0.1]) / 4)


def test_fast_path_updates_match_autograd(monkeypatch):
    """The same agent trained on the hand-written fast path and on autograd ends with the same
    weights (up to float rounding)."""
    import agents.dqn as dqn

    weights = []
    for fast in (True, False):
        monkeypatch.setattr(dqn, "FAST_PATH", fast)
        agent = DQN(small_config(network={"type": "mlp", "hidden": [16, 16],
                                          "activation": "relu"}), CARTPOLE, seed=3)
        assert (agent._layers is not None) == fast
        agent.learn(400, ListLogger())
        weights.append([p.detach().clone() for p in agent.q_net.parameters()])
    for a, b in zip(*weights, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_step_is_torch_adam_and_its_state_round_trips(weight_decay):
    """The direct fused-kernel step gives torch.optim.Adam's weights and state exactly, and a
    state_dict saved midway continues identically."""
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(300, generator=gen)
    grads = [torch.randn(300, generator=gen) for _ in range(6)]

    def make():
        p = torch.nn.Parameter(init.clone())
        return p, torch.optim.Adam([p], lr=1e-2, betas=(0.8, 0.95), eps=1e-6,
                                   weight_decay=weight_decay, fused=True)

    ref, ref_opt = make()
    fast, fast_opt = make()
    step = adam_step(fast_opt)
    assert step != fast_opt.step  # the direct path applies
    for g in grads[:3]:
        ref.grad, fast.grad = g.clone(), g.clone()
        ref_opt.step()
        step()
    assert torch.equal(fast, ref)
    saved = fast_opt.state_dict()
    for key in ("step", "exp_avg", "exp_avg_sq"):
        assert torch.equal(saved["state"][0][key], ref_opt.state_dict()["state"][0][key])
    resumed, resumed_opt = make()
    with torch.no_grad():
        resumed.copy_(fast)
    resumed_opt.load_state_dict(saved)
    resumed_step = adam_step(resumed_opt)
    for g in grads[3:]:
        ref.grad, resumed.grad = g.clone(), g.clone()
        ref_opt.step()
        resumed_step()
    assert torch.equal(resumed, ref)
    # anything but one parameter under a torch Adam keeps the optimizer's own step
    two = torch.optim.Adam([torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())])
    assert adam_step(two) == two.step


def test_clip_grad_norm_matches_torch():
    gen = torch.Generator().manual_seed(1)
    for scale in (0.01, 100.0):  # under and over the limit
        params = [torch.nn.Parameter(torch.zeros(n)) for n in (5, 7)]
        flat = torch.nn.Parameter(torch.zeros(12))
        ref = [torch.nn.Parameter(torch.zeros(n)) for n in (5, 7)]
        for p, r in zip(params, ref, strict=True):
            p.grad = torch.randn(p.numel(), generator=gen) * scale
            r.grad = p.grad.clone()
        flat.grad = torch.cat([p.grad for p in params])
        expected = torch.nn.utils.clip_grad_norm_(ref, 1.0)
        torch.testing.assert_close(clip_grad_norm(params, 1.0), expected)
        torch.testing.assert_close(clip_grad_norm([flat], 1.0), expected)
        torch.testing.assert_close(flat.grad, torch.cat([r.grad for r in ref]))
        for p, r in zip(params, ref, strict=True):
            torch.testing.assert_close(p.grad, r.grad)


# ---- the loop's semantics -------------------------------------------------------------------


def test_presets_validate():
    configs = agent_configs()
    spec = load_spec("cartpole-dqn", [], configs)
    a = spec.agent
    assert (a.lr, a.batch_size, a.buffer_size, a.learning_starts, a.train_freq,
            a.gradient_steps, a.target_update_interval, a.exploration_fraction,
            a.exploration_final_eps, a.network.hidden, a.max_grad_norm, a.loss) == (
        2.3e-3, 64, 100_000, 1000, 256, 128, 10, 0.16, 0.04, [256, 256], 10.0, "huber")
    assert a.total_timesteps is None  # the runner fills it from train.steps
    assert with_horizon(spec).agent.total_timesteps == spec.train.steps == 50_000
    short = with_horizon(load_spec("cartpole-dqn", ["train.steps=20000"], configs))
    assert short.agent.total_timesteps == 20_000  # epsilon decays over the shorter run
    assert load_spec("acrobot-dqn", [], configs).agent.gradient_steps == -1
    assert load_spec("cartpole-dqn-fast", [], configs).agent.algo == "dqn"


def test_counters_follow_sb3_semantics():
    agent = DQN(small_config(), CARTPOLE, seed=0)
    updates, phases = [], []
    agent._update_target = lambda: updates.append(agent.num_timesteps)
    train = agent._train
    agent._train = lambda n: phases.append((agent.num_timesteps, n)) or train(n)
    agent.learn(100, ListLogger())
    assert agent.num_timesteps == 100
    assert updates == list(range(5, 101, 5))  # every target_update_interval transitions
    # every train_freq steps once num_timesteps > learning_starts (50): at 60, 70, ..., 100
    assert phases == [(t, 2) for t in range(60, 101, 10)]
    assert agent.n_updates == 10
    # epsilon: 1 -> 0.05 over 10% of total_timesteps (100 steps)
    assert agent.exploration_rate == pytest.approx(0.05)


def test_gradient_steps_minus_one_and_several_envs():
    spec = EnvSpec(id="CartPole-v1", num_envs=4)
    agent = DQN(small_config(gradient_steps=-1, train_freq=3, target_update_interval=10,
                             learning_starts=0), spec, seed=0)
    updates, phases = [], []
    agent._update_target = lambda: updates.append(agent.n_calls)
    train = agent._train
    agent._train = lambda n: phases.append(n) or train(n)
    agent.learn(120, ListLogger())
    # target: every 10 // 4 = 2 calls; one training phase per 3 calls, one update per transition
    assert updates == list(range(2, agent.n_calls + 1, 2))
    assert sum(phases) == agent.n_updates and all(n <= 12 for n in phases)
    assert len(agent.buffer) == agent.num_timesteps >= 120


def test_next_step_reset_rows_are_skipped_and_truncation_bootstraps():
    # episodes truncated at 10 steps; a random policy (learning never starts)
    spec = EnvSpec(id="CartPole-v1", kwargs={"max_episode_steps": 10})
    agent = DQN(small_config(learning_starts=10**6), spec, seed=3)
    logger = ListLogger()
    agent.learn(60, logger)
    lengths = [int(v) for _, v in logger.series("train/episode_length")]
    assert len(lengths) >= 3 and sum(lengths) <= 60
    buf = agent.buffer
    assert len(buf) == agent.num_timesteps == 60
    obs, next_obs, dones = buf.obs[:60], buf.next_obs[:60], buf.dones[:60]
    ends = np.cumsum(lengths) - 1  # the last transition of each finished episode
    for i in range(59):
        if i in ends:
            assert not torch.equal(next_obs[i], obs[i + 1])  # the next row is a new episode
        else:
            assert torch.equal(next_obs[i], obs[i + 1]) and dones[i] == 0
    for i, length in zip(ends, lengths, strict=True):
        assert dones[i] == (0.0 if length == 10 else 1.0)  # truncation bootstraps
    assert 10 in lengths


def test_target_update_hard_and_polyak():
    for tau in (1.0, 0.25):
        agent = DQN(small_config(tau=tau), CARTPOLE, seed=0)
        with torch.no_grad():
            for p in agent.q_net.parameters():
                p.add_(1.0)
        before = [t.clone() for t in agent.target_net.parameters()]
        agent._update_target()
        for t, b, p in zip(agent.target_net.parameters(), before, agent.q_net.parameters(),
                           strict=True):
            torch.testing.assert_close(t, tau * p + (1 - tau) * b)


def test_predict_shapes_and_epsilon():
    agent = DQN(small_config(), CARTPOLE, seed=0)
    obs = np.zeros((5, 4), dtype=np.float32)
    actions, state = agent.predict(obs, deterministic=True)
    assert actions.shape == (5,) and state is None
    single, _ = agent.predict(obs[0], deterministic=True)
    assert np.ndim(single) == 0 and single == actions[0]
    agent.exploration_rate = 1.0
    random_actions = np.concatenate([agent.predict(obs)[0] for _ in range(40)])
    assert set(random_actions.tolist()) == {0, 1}


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_numpy_greedy_matches_the_torch_network(activation):
    """Acting uses numpy views of the fast path's weights: they follow training and
    checkpoint loads, and pick the torch network's argmax."""
    import agents.dqn as dqn

    config = small_config(network={"type": "mlp", "hidden": [32, 32],
                                   "activation": activation})
    agent = DQN(config, CARTPOLE, seed=0)
    assert agent._np_layers is not None
    obs = np.random.default_rng(0).normal(size=(dqn._NUMPY_ROWS, 4)).astype(np.float32)

    def check():
        with torch.no_grad():
            q = agent.q_net(torch.from_numpy(obs))
        np.testing.assert_array_equal(agent._greedy(obs), q.argmax(1).numpy())
        best2 = q.topk(2, dim=1).values
        assert (best2[:, 0] - best2[:, 1]).min() > 1e-5  # no near-ties in this check

    check()
    agent.learn(300, ListLogger())  # the weights change in place
    check()
    other = DQN(config, CARTPOLE, seed=5)
    other.load_state_dict(agent.state_dict())
    np.testing.assert_array_equal(other._greedy(obs), agent._greedy(obs))


@pytest.mark.parametrize("options", [
    {"double_q": True}, {"dueling": True}, {"n_step": 3},
    {"prioritized": True}, {"loss": "mse", "max_grad_norm": None, "tau": 0.5},
    {"prioritized": True, "double_q": True, "dueling": True, "n_step": 2},
])
def test_options_train(options):
    agent = DQN(small_config(**options), CARTPOLE, seed=0)
    before = [p.clone() for p in agent.q_net.parameters()]
    logger = ListLogger()
    agent.learn(200, logger)
    losses = [v for _, v in logger.series("loss/td")]
    assert agent.n_updates == 30 and len(losses) == 15 and all(map(math.isfinite, losses))
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.q_net.parameters(),
                                                     strict=True))


# ---- learning, checkpoints, NaN guard, SB3 interop -------------------------------------------


@pytest.fixture(scope="module")
def trained():
    spec = load_spec("cartpole-dqn-fast", [], agent_configs())
    agent = DQN(spec.agent, spec.env, seed=0)
    logger = ListLogger()
    start = time.perf_counter()
    agent.learn(spec.train.steps, logger)
    return spec, agent, logger, time.perf_counter() - start


@pytest.mark.slow
def test_learns_cartpole(trained):
    spec, agent, logger, _ = trained
    returns = evaluate(agent, spec.env, 10)
    # a random policy scores about 22; the fast preset reaches 500 on most seeds
    assert np.mean(returns) >= 300, returns
    assert logger.series("time/steps_per_sec")
    assert len(logger.series("train/episode_return")) == len(
        logger.series("train/episode_length")) > 10


@pytest.mark.slow
def test_sb3_evaluate_policy(trained):
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    _, agent, _, _ = trained
    mean, _ = evaluate_policy(agent, Monitor(gym.make("CartPole-v1")), n_eval_episodes=5,
                              deterministic=True)
    assert mean >= 300


def test_checkpoint_round_trip_and_continue(tmp_path):
    config = small_config(train_freq=20, gradient_steps=4)
    agent = DQN(config, CARTPOLE, seed=1)
    agent.learn(300, ListLogger())
    assert "replay" not in agent.state_dict()
    path = save_atomic(agent.state_dict(include_replay=True), tmp_path / "ckpt.pt")
    state = load(path)  # weights_only=True

    other = DQN(config, CARTPOLE, seed=99)
    other.load_state_dict(state)
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(obs)
        torch.testing.assert_close(other.q_net(x), agent.q_net(x), rtol=0, atol=0)
        torch.testing.assert_close(other.target_net(x), agent.target_net(x), rtol=0, atol=0)
    assert np.array_equal(other.predict(obs, deterministic=True)[0],
                          agent.predict(obs, deterministic=True)[0])
    assert (other.num_timesteps, other.n_updates, other.exploration_rate) == (
        agent.num_timesteps, agent.n_updates, agent.exploration_rate)
    assert len(other.buffer) == len(agent.buffer) == 300
    # the same RNG streams: the next draws agree
    assert other.rng.random() == agent.rng.random()
    assert torch.equal(torch.randint(10**6, (4,), generator=other.torch_rng),
                       torch.randint(10**6, (4,), generator=agent.torch_rng))
    # the optimizer state came along: one identical update gives identical weights
    other_sd, agent_sd = other.optimizer.state_dict(), agent.optimizer.state_dict()
    assert other_sd["state"][0]["step"] == agent_sd["state"][0]["step"]

    before = [p.clone() for p in other.q_net.parameters()]
    other.learn(400, ListLogger())
    assert other.num_timesteps == 400 and other.n_updates > agent.n_updates
    assert any(not torch.equal(b, p) for b, p in zip(before, other.q_net.parameters(),
                                                     strict=True))
    # a checkpoint without the buffer loads too, leaving the buffer as it was
    fresh = DQN(config, CARTPOLE, seed=2)
    fresh.load_state_dict(load(save_atomic(agent.state_dict(), tmp_path / "small.pt")))
    assert len(fresh.buffer) == 0 and fresh.num_timesteps == 300


def test_periodic_checkpoints_follow_the_checkpointers_include_replay(tmp_path):
    agent = DQN(small_config(), CARTPOLE, seed=0)
    ckpt = Checkpointer(tmp_path, every=50)
    ckpt.include_replay = True  # what the runner sets from train.save_replay
    agent.learn(60, ListLogger(), ckpt)
    saved = ckpt.load()
    assert saved["step"] == 50 and len(saved["agent"]["replay"]["rewards"]) == 50
    agent.save_replay = False
    assert "replay" not in agent.state_dict()


def test_nan_guard_raises():
    agent = DQN(small_config(), CARTPOLE, seed=0)
    with torch.no_grad():
        agent.q_net[0].net[0].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError) as err:
        agent.learn(200, ListLogger())
    assert err.value.name == "loss/td" and err.value.step == 60  # the first training phase


def test_huge_learning_rate_raises():
    agent = DQN(small_config(lr=1e30), CARTPOLE, seed=0)
    with pytest.raises(NonFiniteLossError):
        agent.learn(1000, ListLogger())


def test_rejects_unsupported_spaces():
    with pytest.raises(ValueError, match="Discrete action space"):
        DQN(small_config(), EnvSpec(id="Pendulum-v1"))
    with pytest.raises(ValueError, match="Box observation space"):
        DQN(small_config(), EnvSpec(id="lab/GridWorld-v0"))
