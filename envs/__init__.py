"""Gymnasium environments of the lab. Importing this package registers the ``lab/...`` ids.

This package is the ground floor: it imports numpy, gymnasium and pygame (and ale-py where it
is installed, which registers the ``ALE/...`` ids), never torch and nothing of ``lab``,
``agents`` or ``generative``.
"""

import gymnasium as gym


def _register(env_id: str, **kwargs) -> None:
    """Register ``env_id`` once: importing (or reloading) this package twice is harmless."""
    if env_id not in gym.registry:
        gym.register(id=env_id, **kwargs)


# A stochastic grid MDP exposing P[S, A, S'], R[S, A] and the terminal mask (envs/gridworld.py).
_register("lab/GridWorld-v0", entry_point="envs.gridworld:GridWorldEnv", max_episode_steps=100)

# CartPole-v1 observing only [x, theta] (envs/pomdp.py), with a numpy-vectorized twin.
_register(
    "lab/CartPolePOMDP-v0",
    entry_point="envs.pomdp:make_cartpole_pomdp",
    vector_entry_point="envs.pomdp:make_cartpole_pomdp_vec",
    max_episode_steps=500,
    reward_threshold=475.0,
)

# Go against an opponent policy (envs/go/env.py); the game's own move cap (2*N*N plies by
# default) truncates, so no TimeLimit wrapper. lab/Go-v0 takes size, komi, ko, ... as kwargs.
_register("lab/Go-v0", entry_point="envs.go.env:GoEnv")
for _n in (9, 7, 5):
    _register(f"lab/Go{_n}x{_n}-v0", entry_point="envs.go.env:GoEnv", kwargs={"size": _n})

# MinAtar's ids (envs/minatar.py: channels-first float observations, gymnasium seeding); the
# minatar package itself is imported only when one is made.
from envs.minatar import GAMES as _MINATAR_GAMES  # noqa: E402
from envs.minatar import game_id as _minatar_id  # noqa: E402

for _game in _MINATAR_GAMES:
    for _version, _minimal in ((0, False), (1, True)):
        _register(_minatar_id(_game, _version), entry_point="envs.minatar:MinAtarEnv",
                  kwargs={"game": _game, "use_minimal_action_set": _minimal})

# ale-py registers the ALE/... ids (its wheel ships the ROMs) when it is imported; it is optional
# (`pip install "lab[atari]"`). envs/atari.py holds the preprocessing.
try:
    import ale_py as _ale_py

    gym.register_envs(_ale_py)
except ImportError:  # pragma: no cover - without ale-py there are no Atari ids
    pass
