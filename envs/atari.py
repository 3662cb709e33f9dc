"""Atari preprocessing (Mnih et al. 2015; Machado et al. 2018) as Gymnasium wrappers.

``wrap_atari(env)`` turns an ALE env made with ``frameskip=1`` (``gym.make("ALE/Pong-v5",
frameskip=1, repeat_action_probability=0.0)``, what the old ``PongNoFrameskip-v4`` was) into
what DQN and PPO papers train on, in Stable-Baselines3's ``AtariWrapper`` + ``VecFrameStack``
order, innermost first:

1. gymnasium's ``AtariPreprocessing``: 1 to ``noop_max`` no-ops after each reset, the action
   repeated ``frame_skip`` times with the max of the last two frames (Atari sprites flicker),
   grayscale (ALE's own luminance), resized to ``screen_size`` square (cv2 INTER_AREA), uint8.
2. training only: ``RecordEpisodeStatistics`` under everything that follows, so
   ``info["episode"]`` carries the real game score and length (in agent steps) when a game ends.
3. training only: ``EpisodicLife``: losing a life ends the training episode (terminated), the
   next reset continues the same game with a no-op; only a real game over resets the emulator.
4. ``FireReset`` (games with FIRE): press FIRE then action 2 after each reset, as SB3's
   ``FireResetEnv``; without episodic life (evaluation) also after each lost life, so the
   agent sees the same thing at the start of a life in both.
5. training only: ``ClipRewardSign``: rewards become their sign, -1, 0 or +1.
6. gymnasium's ``FrameStackObservation``: the last ``frame_stack`` frames, zero frames before
   the start of an episode (as SB3's ``VecFrameStack``), uint8 ``(frame_stack, 84, 84)``.

``training=False`` (evaluation, rendering) keeps 1, 4 and 6: whole games scored with the real
rewards, with the same observations. Rendering (``render_mode="rgb_array"``) gives the ALE's
full 210x160 colour screen; ``metadata["render_fps"]`` is 60 / frame_skip, real time.

This module imports gymnasium and numpy only; ale-py (whose wheel ships the ROMs) and opencv
are needed when an env is made.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, RecordEpisodeStatistics


def _lives(env: gym.Env) -> int:
    return int(env.unwrapped.ale.lives())


class EpisodicLife(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """A lost life ends the episode (``terminated=True``) but not the game: ``reset`` then takes
    one no-op step and the game goes on; a real game over (or a seeded reset) resets the
    emulator. DeepMind's ``EpisodicLifeEnv`` (Mnih et al. 2015), as SB3 has it."""

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = bool(terminated or truncated)
        lives = _lives(self.env)
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self.game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:  # a life was lost: continue the game
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(options=options)
        self.game_over = False
        self.lives = _lives(self.env)
        return obs, info


class FireReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Press FIRE (action 1) then action 2 after a reset, as SB3's ``FireResetEnv`` (games
    such as Breakout wait for FIRE to serve). ``on_life_loss``: also after each lost life
    within an episode (for whole-game evaluation, where no reset follows a lost life)."""

    def __init__(self, env: gym.Env, on_life_loss: bool = False):
        gym.utils.RecordConstructorArgs.__init__(self, on_life_loss=on_life_loss)
        gym.Wrapper.__init__(self, env)
        meanings = env.unwrapped.get_action_meanings()
        if len(meanings) < 3 or meanings[1] != "FIRE":
            raise ValueError(f"FireReset needs FIRE as action 1, the game has {meanings}")
        self.on_life_loss = on_life_loss
        self.lives = 0

    def _fire(self, obs, info):
        """Steps 1 and 2; returns (obs, reward, terminated, truncated, info) after them."""
        total = 0.0
        for action in (1, 2):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                return obs, total, terminated, truncated, info
        return obs, total, False, False, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        obs, _, terminated, truncated, info = self._fire(obs, info)
        if terminated or truncated:  # as SB3: a reset that ends the game at once starts again
            obs, info = self.env.reset(options=options)
        self.lives = _lives(self.env)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.on_life_loss and not (terminated or truncated):
            lives = _lives(self.env)
            if lives < self.lives:
                obs, extra, terminated, truncated, info = self._fire(obs, info)
                reward = float(reward) + extra
            self.lives = lives
        return obs, reward, terminated, truncated, info


class ClipRewardSign(gym.RewardWrapper, gym.utils.RecordConstructorArgs):
    """reward -> sign(reward): -1.0, 0.0 or 1.0 (DQN's reward clipping)."""

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.RewardWrapper.__init__(self, env)

    def reward(self, reward: SupportsFloat) -> float:
        return float(np.sign(float(reward)))


def wrap_atari(env: gym.Env, *, noop_max: int = 30, frame_skip: int = 4, screen_size: int = 84,
               frame_stack: int = 4, terminal_on_life_loss: bool = True,
               clip_reward: bool = True, fire_reset: bool = True,
               training: bool = True) -> gym.Env:
    """The standard Atari preprocessing around an ALE env made with ``frameskip=1`` (see the
    module docstring for the order). ``training=False`` leaves out episodic life, reward
    clipping and the episode statistics: whole games with the real score."""
    env = AtariPreprocessing(env, noop_max=noop_max, frame_skip=frame_skip,
                             screen_size=screen_size, terminal_on_life_loss=False,
                             grayscale_obs=True, grayscale_newaxis=False, scale_obs=False)
    if training:
        env = RecordEpisodeStatistics(env)
        if terminal_on_life_loss:
            env = EpisodicLife(env)
    meanings = env.unwrapped.get_action_meanings()
    if fire_reset and len(meanings) >= 3 and meanings[1] == "FIRE":
        env = FireReset(env, on_life_loss=not (training and terminal_on_life_loss))
    if training and clip_reward:
        env = ClipRewardSign(env)
    if frame_stack > 1:
        env = FrameStackObservation(env, frame_stack, padding_type="zero")
    env.metadata = {**env.metadata, "render_fps": max(1, 60 // frame_skip)}
    return env


def stacks_frames(env: gym.Env) -> int:
    """The ``stack_size`` of a ``FrameStackObservation`` in ``env``'s wrapper chain, else 0:
    such observations share all but their newest frame with the previous one, which a frame
    replay buffer stores once."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, FrameStackObservation):
            return int(env.stack_size)
        env = env.env
    return 0
