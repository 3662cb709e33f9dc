"""RL agents. ``REGISTRY`` maps an ``agent.algo`` name to ``module:Class``.

Each agent class carries its pydantic config as ``Class.Config`` (with ``algo`` a Literal of its
name) and follows the contract in ``agents/base.py``. Modules load lazily: ``lab list`` and
spec validation import only what they use.
"""

from __future__ import annotations

import importlib

REGISTRY: dict[str, str] = {
    "value_iteration": "agents.tabular:ValueIteration",
    "q_learning": "agents.tabular:QLearning",
    "dqn": "agents.dqn:DQN",
    "reinforce": "agents.reinforce:Reinforce",
    "a2c": "agents.actor_critic:A2C",
    "ppo": "agents.actor_critic:PPO",
    "sb3.dqn": "agents.sb3:SB3DQN",
    "sb3.a2c": "agents.sb3:SB3A2C",
    "sb3.ppo": "agents.sb3:SB3PPO",
}


def agent_class(algo: str):
    module, _, name = REGISTRY[algo].partition(":")
    return getattr(importlib.import_module(module), name)


def agent_configs() -> dict:
    """algo name -> its config model, for every agent whose module is present."""
    out = {}
    for algo in REGISTRY:
        try:
            out[algo] = agent_class(algo).Config
        except (ImportError, AttributeError):
            continue
    return out
