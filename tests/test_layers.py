"""The import rules of DESIGN.md: imports flow downhill."""

import subprocess
import sys

import pytest

CHECK = """
import sys
import {modules}
bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden})
print(bad)
sys.exit(1 if bad else 0)
"""


@pytest.mark.parametrize("modules, forbidden", [
    # the shared machinery never imports agents or generative
    ("lab.spec, lab.tracking, lab.checkpoint, lab.trainer, lab.backbone, lab.backbone.fast_mlp",
     {"agents", "generative"}),
    # envs, the ground floor, imports no torch and nothing of the project
    ("envs, envs.gridworld, envs.pomdp, envs.go, envs.go.rules, envs.go.fastboard, "
     "envs.go.playout, envs.go.arena, envs.go.gtp, envs.go.sgf, envs.go.gnugo, "
     "envs.go.play_window, envs.go.replay, envs.go.features, envs.go.symmetry, envs.go.expert",
     {"torch", "lab", "agents", "generative"}),
    # agents never import mlflow (they get a logger)
    ("agents.dqn, agents.actor_critic, agents.reinforce, agents.tabular, agents.sb3",
     {"mlflow"}),
    # the MCTS player needs neither torch nor mlflow
    ("agents.mcts", {"mlflow", "torch", "lab"}),
])
def test_imports_flow_downhill(modules, forbidden):
    out = subprocess.run([sys.executable, "-c", CHECK.format(modules=modules,
                                                             forbidden=forbidden)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
