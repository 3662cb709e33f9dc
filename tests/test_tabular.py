"""Tabular math against hand-computed values; VI against the exact solution; agents' contract."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from agents import agent_configs
from agents.tabular import (
    QLearning,
    ValueIteration,
    bellman_backup,
    linear_schedule,
    policy_evaluation_exact,
    q_learning_update,
    value_iteration,
    visit_count_step_size,
)
from lab.checkpoint import NonFiniteLossError, load, save_atomic
from lab.spec import EnvSpec, load_spec
from lab.tracking import ListLogger

GRID = EnvSpec(id="lab/GridWorld-v0")


def grid_model():
    return gym.make("lab/GridWorld-v0").unwrapped.transition_model()


# A 2-state MDP: action 0 stays, action 1 switches; rewards R[s, a] below, gamma 0.5.
# Staying in state 1 pays 2 forever: V*(1) = 2 / (1 - 0.5) = 4.
# From state 0, switching pays 1 + 0.5 * 4 = 3, staying 0 + 0.5 * V*(0): V*(0) = 3.
TWO_P = np.array([[[1.0, 0.0], [0.0, 1.0]],
                  [[0.0, 1.0], [1.0, 0.0]]])
TWO_R = np.array([[0.0, 1.0],
                  [2.0, 0.0]])


# ---- pure math ------------------------------------------------------------------------------

def test_bellman_backup_by_hand():
    np.testing.assert_allclose(bellman_backup(TWO_P, TWO_R, 0.5, np.zeros(2)), TWO_R)
    # V = [3, 4]: Q[0] = [0 + .5*3, 1 + .5*4], Q[1] = [2 + .5*4, 0 + .5*3]
    np.testing.assert_allclose(bellman_backup(TWO_P, TWO_R, 0.5, np.array([3.0, 4.0])),
                               [[1.5, 3.0], [4.0, 1.5]])


def test_value_iteration_two_state_mdp_by_hand():
    V, Q, policy, iterations = value_iteration(TWO_P, TWO_R, 0.5, tol=1e-12)
    np.testing.assert_allclose(V, [3.0, 4.0], atol=1e-10)
    np.testing.assert_allclose(Q, [[1.5, 3.0], [4.0, 1.5]], atol=1e-10)
    np.testing.assert_array_equal(policy, [1, 0])
    assert 30 < iterations < 60  # residual halves each sweep: ~log2(4 / 1e-12) sweeps


def test_policy_evaluation_exact_by_hand():
    # always stay: V = [0, 2 / 0.5]
    np.testing.assert_allclose(policy_evaluation_exact(TWO_P, TWO_R, 0.5, np.array([0, 0])),
                               [0.0, 4.0])
    # always switch: V0 = 1 + .5 V1, V1 = .5 V0  ->  V0 = 4/3, V1 = 2/3
    np.testing.assert_allclose(policy_evaluation_exact(TWO_P, TWO_R, 0.5, np.array([1, 1])),
                               [4 / 3, 2 / 3])
    # uniform: V0 = .5 + .5 m, V1 = 1 + .5 m with m = (V0 + V1) / 2 = 1.5
    uniform = np.full((2, 2), 0.5)
    np.testing.assert_allclose(policy_evaluation_exact(TWO_P, TWO_R, 0.5, uniform), [1.25, 1.75])


def test_q_learning_update_by_hand():
    # target = 1 + .9 * max(.2, .8) = 1.72; td = 1.22; q = .5 + .5 * 1.22 = 1.11
    q, td = q_learning_update(0.5, 1.0, np.array([0.2, 0.8]), False, alpha=0.5, gamma=0.9)
    assert q == pytest.approx(1.11) and td == pytest.approx(1.22)
    # terminal: no bootstrap, target = 1; td = .5; q = .75
    q, td = q_learning_update(0.5, 1.0, np.array([0.2, 0.8]), True, alpha=0.5, gamma=0.9)
    assert q == pytest.approx(0.75) and td == pytest.approx(0.5)


def test_schedules_by_hand():
    assert linear_schedule(1.0, 0.1, 100, 0) == 1.0
    assert linear_schedule(1.0, 0.1, 100, 50) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 100, 1000) == pytest.approx(0.1)
    assert linear_schedule(1.0, 0.1, 0, 0) == 0.1
    assert visit_count_step_size(1.0, 1.0, 0.0, 4) == 0.25  # 1/n: the running average
    assert visit_count_step_size(1.0, 0.5, 0.0, 16) == 0.25
    assert visit_count_step_size(0.3, 0.0, 0.0, 1000) == 0.3  # power 0: constant
    assert visit_count_step_size(1.0, 1.0, 0.05, 1000) == 0.05  # floor


# ---- value iteration against the exact solution ---------------------------------------------

@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99])
def test_value_iteration_matches_linear_solve_of_its_greedy_policy(gamma):
    P, R, _ = grid_model()
    V, Q, policy, _ = value_iteration(P, R, gamma, tol=1e-12)
    # exact V^pi of the greedy policy: (I - gamma P_pi) V = R_pi, one numpy solve
    n = P.shape[0]
    P_pi, R_pi = P[np.arange(n), policy], R[np.arange(n), policy]
    V_exact = np.linalg.solve(np.eye(n) - gamma * P_pi, R_pi)
    np.testing.assert_allclose(V, V_exact, atol=1e-6)
    np.testing.assert_allclose(policy_evaluation_exact(P, R, gamma, policy), V_exact, atol=1e-9)
    # V solves the Bellman optimality equations, and no action beats the greedy one
    np.testing.assert_allclose(bellman_backup(P, R, gamma, V_exact).max(axis=1), V_exact,
                               atol=1e-6)


def test_value_iteration_reproduces_aima_4x3_utilities():
    # AIMA (Russell & Norvig) fig. 17.3: gamma 1, R(s) = -0.04, slip 0.2. There the reward of a
    # state is collected on being in it, here on entering it: U_aima(s) = V(s) + R(s).
    P, R, terminal = grid_model()
    V, _, policy, _ = value_iteration(P, R, 1.0, tol=1e-12)
    aima = {0: 0.812, 1: 0.868, 2: 0.918, 4: 0.762, 5: 0.660, 7: 0.705, 8: 0.655, 9: 0.611,
            10: 0.388}
    for s, u in aima.items():
        assert V[s] - 0.04 == pytest.approx(u, abs=1e-3), s
    # fig. 17.2(a): right along the top, up the left column and at (3,2), left along the bottom
    up, right, left = 0, 1, 3
    expected = {0: right, 1: right, 2: right, 4: up, 5: up, 7: up, 8: left, 9: left, 10: left}
    assert {s: int(policy[s]) for s in expected} == expected
    # gamma = 1 is solvable exactly once the terminal states are pinned to 0
    np.testing.assert_allclose(policy_evaluation_exact(P, R, 1.0, policy, terminal), V,
                               atol=1e-6)


# ---- agents ---------------------------------------------------------------------------------

def test_value_iteration_agent_learns_logs_and_evaluates_with_sb3():
    agent = ValueIteration(ValueIteration.Config(gamma=0.9), GRID, seed=0)
    logger = ListLogger()
    agent.learn(2000, logger)
    assert agent.num_timesteps >= 2000 and agent.iterations > 10
    residuals = [v for _, v in logger.series("train/bellman_residual")]
    assert len(residuals) == agent.iterations and residuals[-1] < 1e-10
    assert len(logger.series("train/episode_return")) > 50
    assert logger.series("time/steps_per_sec")

    # SB3's evaluate_policy on the planned agent: the mean return matches the exact expected
    # undiscounted return of the greedy policy from the start state
    P, R, terminal = grid_model()
    expected = policy_evaluation_exact(P, R, 1.0, agent.policy, terminal)[7]
    env = Monitor(gym.make("lab/GridWorld-v0"))
    mean, std = evaluate_policy(agent, env, n_eval_episodes=400, deterministic=True)
    assert abs(mean - expected) < 4 * std / np.sqrt(400)
    # a second call with a larger total continues, without planning again
    agent.learn(3000, logger)
    assert agent.num_timesteps >= 3000 and len(logger.series("train/bellman_residual")) == len(
        residuals)


def test_value_iteration_agent_needs_a_model():
    agent = ValueIteration(ValueIteration.Config(), EnvSpec(id="CartPole-v1"))
    with pytest.raises(ValueError, match="transition_model"):
        agent.learn(10, ListLogger())


def test_value_iteration_agent_state_dict_round_trip(tmp_path):
    agent = ValueIteration(ValueIteration.Config(gamma=0.9), GRID, seed=0)
    agent.learn(500, ListLogger())
    save_atomic(agent.state_dict(), tmp_path / "vi.pt")
    restored = ValueIteration(ValueIteration.Config(gamma=0.9), GRID, seed=0)
    restored.load_state_dict(load(tmp_path / "vi.pt"))
    np.testing.assert_array_equal(restored.policy, agent.policy)
    np.testing.assert_array_equal(restored.V, agent.V)
    assert restored.num_timesteps == agent.num_timesteps
    logger = ListLogger()
    restored.learn(1000, logger)
    assert restored.num_timesteps >= 1000 and not logger.series("train/bellman_residual")


@pytest.mark.parametrize("obs,shape", [(np.int64(7), ()), (np.array([7, 0]), (2,)),
                                       (np.array([[7], [0]]), (2,))])
def test_predict_shapes(obs, shape):
    agent = ValueIteration(ValueIteration.Config(gamma=0.9), GRID)
    actions, state = agent.predict(obs)
    assert actions.shape == shape and state is None
    q_agent = QLearning(QLearning.Config(), GRID)
    assert q_agent.predict(obs, deterministic=True)[0].shape == shape
    assert q_agent.predict(obs, deterministic=False)[0].shape == shape


def test_q_learning_reaches_the_value_iteration_policy():
    gamma = 0.9
    P, R, terminal = grid_model()
    V, Q, policy, _ = value_iteration(P, R, gamma, tol=1e-12)
    spec = load_spec("gridworld-qlearning", [], agent_configs())  # the preset, as users run it
    assert spec.agent.gamma == gamma
    agent = QLearning(spec.agent, spec.env, seed=0)
    logger = ListLogger()
    agent.learn(spec.train.steps, logger)
    greedy = agent.Q.argmax(axis=1)
    nonterminal = ~terminal
    np.testing.assert_array_equal(greedy[nonterminal], policy[nonterminal])
    assert np.abs(agent.Q.max(axis=1) - V)[nonterminal].max() < 0.05
    # the contract's metrics, on the env-step axis
    for key in ("train/episode_return", "train/episode_length", "loss/td_error",
                "time/steps_per_sec"):
        assert logger.series(key), key
    steps = [s for s, _ in logger.records]
    assert steps == sorted(steps) and steps[-1] <= agent.num_timesteps
    # a seeded env (the test is repeatable) and enough episodes that the mean is within ~0.05
    env = DummyVecEnv([lambda: Monitor(gym.make("lab/GridWorld-v0"))])
    env.seed(0)
    mean, _ = evaluate_policy(agent, env, n_eval_episodes=300)
    assert mean > 0.6  # the optimal policy's expected return from the start is 0.731


def test_q_learning_save_load_continue(tmp_path):
    config = QLearning.Config(gamma=0.9, epsilon_decay_steps=2000)
    agent = QLearning(config, EnvSpec(id="lab/GridWorld-v0", num_envs=2), seed=3)
    agent.learn(3000, ListLogger())
    save_atomic(agent.state_dict(), tmp_path / "q.pt")
    restored = QLearning(config, EnvSpec(id="lab/GridWorld-v0", num_envs=2), seed=3)
    restored.load_state_dict(load(tmp_path / "q.pt"))
    np.testing.assert_array_equal(restored.Q, agent.Q)
    np.testing.assert_array_equal(restored.visits, agent.visits)
    assert restored.num_timesteps == agent.num_timesteps
    assert restored.epsilon() == agent.epsilon()
    # the agent's own RNG is restored: the same exploratory actions follow
    states = np.arange(11)
    np.testing.assert_array_equal(restored.predict(states)[0], agent.predict(states)[0])
    visits_before = restored.visits.sum()
    restored.learn(6000, ListLogger())
    assert restored.num_timesteps >= 6000 and restored.visits.sum() > visits_before


def test_q_learning_checkpointer_is_called():
    class Recorder:
        def __init__(self):
            self.steps = []

        def maybe_save(self, step, state_fn):
            if step % 1000 == 0:
                self.steps.append(step)
                assert set(state_fn()) == {"Q", "visits", "num_timesteps", "rng"}

    rec = Recorder()
    QLearning(QLearning.Config(), GRID).learn(3000, ListLogger(), checkpointer=rec)
    assert rec.steps == [1000, 2000, 3000]


def test_q_learning_stops_on_non_finite_td_error():
    agent = QLearning(QLearning.Config(q_init=float("nan")), GRID)
    with pytest.raises(NonFiniteLossError, match="td_error"):
        agent.learn(100, ListLogger())


def test_q_learning_refuses_continuous_observations():
    with pytest.raises(ValueError, match="Discrete"):
        QLearning(QLearning.Config(), EnvSpec(id="CartPole-v1"))
