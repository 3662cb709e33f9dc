"""A stand-in agent for the runner and CLI tests: it keeps the agent contract (learn, predict,
state_dict) with trivial learning, and can be told to produce a NaN loss at a given step."""

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from lab.checkpoint import check_finite


class FakeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algo: str = "fake"
    nan_at: int = -1
    lr: float = Field(0.1, gt=0)


class FakeAgent:
    Config = FakeConfig

    def __init__(self, config, env_spec, *, device="cpu", seed=0):
        self.config, self.env_spec = config, env_spec
        self.num_timesteps = 0
        self.weight = torch.zeros(1)

    def learn(self, total_steps, logger, checkpointer=None, progress=None):
        while self.num_timesteps < total_steps:
            self.num_timesteps += 10
            step = self.num_timesteps
            self.weight += self.config.lr
            loss = float("nan") if step == self.config.nan_at else 1.0 / step
            check_finite({"loss/fake": loss}, step)
            if step % 50 == 0:
                logger.log({"train/episode_return": float(step), "loss/fake": loss,
                            "time/steps_per_sec": 1e4}, step)
            if checkpointer is not None:
                checkpointer.maybe_save(step, self.state_dict)
            if progress is not None:
                progress(step, float(step))

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        return np.zeros(len(obs), dtype=np.int64), state

    def state_dict(self):
        return {"num_timesteps": self.num_timesteps, "weight": self.weight.clone()}

    def load_state_dict(self, state):
        self.num_timesteps = state["num_timesteps"]
        self.weight = state["weight"].clone()
