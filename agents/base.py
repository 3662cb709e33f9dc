"""The contract every agent keeps (a Protocol, no base class to inherit).

- ``Agent(config, env_spec, *, device="cpu", seed=0)``: ``config`` is the agent's pydantic
  config (extra keys forbidden), ``env_spec`` a ``lab.spec.EnvSpec``; agents build their own
  envs with ``agents.common.make_vec_env(env_spec, seed)``.
- ``learn(total_steps, logger, checkpointer=None, progress=None)`` trains until
  ``num_timesteps >= total_steps`` (so a resumed agent continues where it stopped). It logs
  ``train/episode_return`` and ``train/episode_length`` for every finished episode, its losses
  under ``loss/<name>``, and ``time/steps_per_sec``, always with the env step as ``step``.
  It calls ``lab.checkpoint.check_finite(losses, step)`` after every update and
  ``checkpointer.maybe_save(step, self.state_dict)`` in its loop, and ``progress(step,
  last_return)`` (if given) now and then for the progress bar.
- ``predict(obs, state=None, episode_start=None, deterministic=False) -> (action, state)``:
  SB3's signature, batched or single observation, numpy in and out.
- ``state_dict()`` / ``load_state_dict(d)``: model, optimizer, counters (``num_timesteps``),
  schedules, and whatever else resuming needs (tensors, numbers, strings, lists, dicts only:
  checkpoints load with ``weights_only=True``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Agent(Protocol):
    num_timesteps: int

    def learn(self, total_steps: int, logger, checkpointer=None, progress=None) -> None: ...

    def predict(
        self,
        obs: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...
