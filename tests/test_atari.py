"""Agents that see pixels: the Atari wrappers (episodic life, FIRE at a life's start, reward
clipping on a scripted stub; shapes, dtypes, frame stacking, whole-game scores and gymnasium's
checker on real ALE games), the MinAtar adapter, the MinAtar network, the presets, short DQN and
PPO runs on MinAtar Breakout and Atari, and `lab render` of a MinAtar run."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the MinAtar ids, imports ale-py)
from agents.common import make_env, make_vec_env, recorded_episodes
from envs.atari import ClipRewardSign, EpisodicLife, FireReset, stacks_frames, wrap_atari
from lab.spec import EnvSpec
from lab.tracking import ListLogger

pytest.importorskip("ale_py")
pytest.importorskip("cv2")  # gymnasium's AtariPreprocessing resizes with opencv
pytest.importorskip("minatar")

ATARI_KWARGS = {"frameskip": 1, "repeat_action_probability": 0.0}


def atari_spec(game: str = "Breakout", num_envs: int = 1) -> EnvSpec:
    return EnvSpec(id=f"ALE/{game}-v5", num_envs=num_envs, kwargs=ATARI_KWARGS,
                   wrapper={"type": "atari"})


def checker_warnings(env) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    return [str(w.message) for w in caught
            if "different from the unwrapped version" not in str(w.message)]


# ---- the wrappers on a scripted stub --------------------------------------------------------

class FakeALE:
    def __init__(self, game):
        self.game = game

    def lives(self) -> int:
        return self.game.lives


class StubGame(gym.Env):
    """3 lives; LEFT (3) loses one (reward -2), RIGHT (2) scores 7, others 0."""

    def __init__(self):
        self.observation_space = spaces.Box(0, 255, (2,), np.uint8)
        self.action_space = spaces.Discrete(4)
        self.ale = FakeALE(self)
        self.lives, self.resets, self.actions = 3, 0, []

    def get_action_meanings(self):
        return ["NOOP", "FIRE", "RIGHT", "LEFT"]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.lives, self.resets = 3, self.resets + 1
        return np.zeros(2, np.uint8), {}

    def step(self, action):
        self.actions.append(int(action))
        reward = {2: 7.0, 3: -2.0}.get(int(action), 0.0)
        if action == 3:
            self.lives -= 1
        return np.full(2, len(self.actions), np.uint8), reward, self.lives == 0, False, {}


def test_episodic_life_ends_the_episode_not_the_game():
    game = StubGame()
    env = EpisodicLife(game)
    env.reset(seed=0)
    assert game.resets == 1
    _, _, terminated, truncated, _ = env.step(3)  # a life lost
    assert terminated and not truncated
    env.reset()  # the game goes on with a no-op
    assert game.resets == 1 and game.actions[-1] == 0 and game.lives == 2
    _, _, terminated, _, _ = env.step(2)
    assert not terminated
    env.step(3)
    env.reset()
    _, _, terminated, _, _ = env.step(3)  # the last life: game over
    assert terminated and game.lives == 0
    env.reset()
    assert game.resets == 2 and game.lives == 3  # a real reset
    env.reset(seed=1)  # a seeded reset is always real
    assert game.resets == 3


def test_fire_reset_presses_fire_at_each_reset_and_after_lost_lives_when_asked():
    game = StubGame()
    env = FireReset(game)
    env.reset(seed=0)
    assert game.actions == [1, 2]
    env.step(3)
    assert game.actions == [1, 2, 3]  # without on_life_loss the next reset fires
    game = StubGame()
    env = FireReset(game, on_life_loss=True)
    env.reset(seed=0)
    _, reward, terminated, _, _ = env.step(3)
    assert game.actions == [1, 2, 3, 1, 2] and reward == -2.0 + 7.0 and not terminated
    env.step(0)
    assert game.actions[-1] == 0  # no life lost, no FIRE


def test_fire_reset_refuses_games_without_fire():
    game = StubGame()
    game.get_action_meanings = lambda: ["NOOP", "RIGHT", "LEFT"]
    with pytest.raises(ValueError, match="FIRE"):
        FireReset(game)


def test_rewards_are_clipped_to_their_sign():
    env = ClipRewardSign(StubGame())
    env.reset(seed=0)
    rewards = [env.step(a)[1] for a in (2, 0, 3)]
    assert rewards == [1.0, 0.0, -1.0] and all(type(r) is float for r in rewards)


# ---- real Atari games -----------------------------------------------------------------------

def test_atari_observations_are_stacked_uint8_frames_with_zero_padding():
    env = make_env(atari_spec("Pong"))
    assert env.observation_space == spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert stacks_frames(env) == 4 and env.metadata["render_fps"] == 15
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert not obs[:3].any() and obs[3].any()  # zero frames before the episode's first
    nxt, reward, terminated, truncated, _ = env.step(0)
    np.testing.assert_array_equal(nxt[:3], obs[1:])  # the stack moves by one frame
    assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
    env.close()


def test_atari_wrapped_env_passes_gymnasium_checker():
    env = wrap_atari(gym.make("ALE/Breakout-v5", **ATARI_KWARGS))
    assert checker_warnings(env) == []


def test_training_envs_lose_lives_evaluation_plays_whole_games():
    train = make_vec_env(atari_spec("Breakout"))
    names = repr(train.envs[0])
    assert "EpisodicLife" in names and "ClipRewardSign" in names
    evaluation = repr(make_env(atari_spec("Breakout")))
    assert "EpisodicLife" not in evaluation and "ClipRewardSign" not in evaluation
    assert "FireReset" in evaluation

    rng = np.random.default_rng(0)
    train.reset(seed=0)
    lives_ended, clipped, games = 0, 0.0, []
    for _ in range(5000):
        _, reward, terminated, truncated, infos = train.step(rng.integers(4, size=1))
        assert reward[0] in (-1.0, 0.0, 1.0)
        clipped += reward[0]
        games = recorded_episodes(infos)
        if games:
            break
        lives_ended += int(terminated[0])
    train.close()
    assert len(games) == 1, "no game ended in 5000 steps of random Breakout"
    score, length = games[0]
    assert lives_ended == 4  # five lives: four episodes end before the game does
    assert score >= clipped and length > 5  # the real score (bricks give 1, 4 or 7)


# ---- MinAtar ----------------------------------------------------------------------------------

@pytest.mark.parametrize("render_mode", [None, "rgb_array"])
def test_minatar_passes_gymnasium_checker(render_mode):
    env = gym.make("MinAtar/Breakout-v1", render_mode=render_mode)
    assert checker_warnings(env.unwrapped) == []


def test_minatar_observations_are_channels_first_binary_floats():
    env = gym.make("MinAtar/Breakout-v1", render_mode="rgb_array")
    assert env.observation_space == spaces.Box(0.0, 1.0, (4, 10, 10), np.float32)
    assert env.action_space == spaces.Discrete(3)
    obs, _ = env.reset(seed=3)
    assert obs.dtype == np.float32 and set(np.unique(obs)) <= {0.0, 1.0}
    assert obs[3].sum() == 30  # three rows of bricks
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs, again)
    frame = env.render()
    assert frame.shape == (160, 160, 3) and frame.dtype == np.uint8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium calls a -v0 beside a -v1 out of date
        assert gym.make("MinAtar/Breakout-v0").action_space.n == 6
    last = gym.make("MinAtar/Breakout-v1", channels_first=False)
    assert last.observation_space.shape == (10, 10, 4)


def test_minatar_network_shapes():
    from lab.backbone import build_body

    body = build_body({"type": "minatar_cnn"}, (4, 10, 10))
    assert body.out_dim == 128 and body.convs[0].out_channels == 16
    assert body.head[0].in_features == 16 * 8 * 8
    assert body(torch.zeros(5, 4, 10, 10)).shape == (5, 128)


def test_shared_body_runs_once_and_gives_what_the_branches_give():
    from agents.actor_critic import ActorCritic
    from lab.backbone import parse_network_spec

    net = parse_network_spec({"type": "minatar_cnn", "init": "orthogonal"})
    shared = ActorCritic((4, 10, 10), spaces.Discrete(3), net, share_body=True)
    separate = ActorCritic((4, 10, 10), spaces.Discrete(3), net)
    body = sum(p.numel() for p in shared.pi_body.parameters())
    count = sum(p.numel() for p in shared.parameters())
    assert sum(p.numel() for p in separate.parameters()) - count == body
    obs = torch.rand(6, 4, 10, 10)
    logits, values, _ = shared(obs)
    assert torch.allclose(logits, shared.policy(obs)[0])
    assert torch.allclose(values, shared.value(obs)[0])


# ---- presets and short runs -------------------------------------------------------------------

PIXEL_PRESETS = ["pong-dqn", "breakout-dqn", "breakout-ppo", "minatar-breakout-dqn",
                 "minatar-breakout-ppo"]


def logged(logger: ListLogger) -> set[str]:
    return {k for _, m in logger.records for k in m}


def close(agent) -> None:
    env = getattr(agent, "_env", None)
    if env is not None:
        env.close()


def preset_agent(name: str, overrides=()):
    from agents import agent_configs
    from lab.commands import env_ids
    from lab.runner import build_agent, with_horizon
    from lab.spec import load_spec

    spec = with_horizon(load_spec(name, list(overrides), agent_configs(), env_ids()))
    return spec, build_agent(spec)


@pytest.mark.parametrize("name", PIXEL_PRESETS)
def test_presets_validate_and_build(name):
    from agents.frame_replay import FrameReplayBuffer

    spec, agent = preset_agent(name, ["agent.buffer_size=100"] if "dqn" in name else [])
    if spec.env.id.startswith("ALE/"):
        assert spec.env.wrapper is not None
        if name.endswith("dqn"):
            assert isinstance(agent.buffer, FrameReplayBuffer)  # stacked frames stored once
    close(agent)


def test_dqn_on_minatar_breakout_runs_and_logs():
    _, agent = preset_agent("minatar-breakout-dqn", [
        "train.steps=400", "agent.learning_starts=100", "agent.buffer_size=1000"])
    logger = ListLogger()
    agent.learn(400, logger)
    assert agent.num_timesteps >= 400 and agent.n_updates > 250
    assert {"train/episode_return", "train/episode_length", "loss/td"} <= logged(logger)
    action, _ = agent.predict(np.zeros((4, 10, 10), np.float32), deterministic=True)
    assert 0 <= int(action) < 3
    close(agent)


def test_ppo_on_minatar_breakout_runs_and_logs():
    _, agent = preset_agent("minatar-breakout-ppo", [
        "train.steps=512", "agent.n_steps=32", "agent.batch_size=64"])
    logger = ListLogger()
    agent.learn(512, logger)
    assert agent.num_timesteps >= 512 and agent.n_updates == 2
    assert {"train/episode_return", "loss/policy", "loss/value"} <= logged(logger)
    close(agent)


def test_atari_dqn_and_ppo_take_a_few_updates():
    _, dqn = preset_agent("pong-dqn", ["agent.buffer_size=200", "agent.learning_starts=24",
                                       "agent.batch_size=4", "train.steps=48"])
    dqn.learn(48, ListLogger())
    assert dqn.n_updates > 0
    close(dqn)
    _, ppo = preset_agent("breakout-ppo", ["env.num_envs=2", "agent.n_steps=8",
                                           "agent.batch_size=8", "agent.n_epochs=1",
                                           "train.steps=16"])
    ppo.learn(16, ListLogger())
    assert ppo.n_updates == 1
    close(ppo)


def test_render_gives_the_atari_screen():
    from lab.render import record_episode

    class Noop:
        def predict(self, obs, state=None, episode_start=None, deterministic=False):
            return np.zeros(len(obs), dtype=np.int64), state

    frames, fps = record_episode(Noop(), atari_spec("Pong"), max_frames=12)
    assert fps == 15 and len(frames) == 12
    assert all(f.shape == (210, 160, 3) and f.dtype == np.uint8 for f in frames)


def test_lab_render_of_a_minatar_run(store, tmp_path):
    import imageio.v2 as imageio

    from lab.cli import main
    from lab.tracking import Tracker

    assert main(["train", "minatar-breakout-dqn", "train.steps=300", "train.eval_episodes=1",
                 "agent.learning_starts=100", "agent.buffer_size=1000",
                 "train.gif_max_frames=20", "--no-progress", "--tracking-uri", store]) == 0
    tracker = Tracker(store)
    run = tracker.client.search_runs([tracker.experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert main(["render", run.info.run_id, "--out", "ep.gif", "--max-frames", "15",
                 "--tracking-uri", store]) == 0
    frames = imageio.mimread(tmp_path / "ep.gif")
    assert 1 <= len(frames) <= 15 and frames[0].shape[:2] == (160, 160)
