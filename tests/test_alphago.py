"""AlphaGo (issue 5 section 2): the REINFORCE loss, PUCT selection, the networks and their
planes, the value network's data (one position per game), and the whole pipeline on 5x5."""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from cli_helpers import assert_refused

from agents import mcts_kernel as K
from agents.alphago import (
    AlphaGoSpec,
    alphago_value_games,
    play_games,
    reinforce_loss,
    value_positions,
)
from agents.alphago_nets import (
    ILLEGAL_LOGIT,
    NET_PLANES,
    PolicyNet,
    ValueNet,
    leaf_features,
    load_networks,
    position_features,
    random_symmetries,
    save_networks,
)
from agents.alphago_play import NetworkEvaluator, SearchPlayer
from agents.mcts import Leaves, MCTSConfig
from envs.go import Position, text_to_move
from envs.go.symmetry import transform_board, transform_move
from lab.alphago_runner import build_run_player, load_alphago_spec
from lab.cli import main
from lab.go_commands import _options
from lab.spec import preset_names
from lab.tracking import Tracker

HAVE_GNUGO = shutil.which("gnugo") is not None or os.path.exists("/usr/games/gnugo")


def tiny_spec(**kw) -> AlphaGoSpec:
    base = dict(name="t", size=5, komi=0.5, network={"channels": 8, "blocks": 1},
                value_network={"channels": 8, "blocks": 1, "value_hidden": 8},
                sl={"train": {"epochs": 1}}, value={"games": 10, "batch_games": 4,
                                                    "train": {"epochs": 1}})
    return AlphaGoSpec.model_validate({**base, **kw})



# ---- REINFORCE --------------------------------------------------------------------------------

def test_reinforce_loss_sign_and_scale_on_a_two_move_game():
    """One move wins (+1), the other loses (-1). Two games, one of each, at p = (3/4, 1/4):
    loss = -(1/2) * (log 3/4 - log 1/4) = -(1/2) log 3, and gradient descent raises the
    winning move's logit by exactly what it lowers the losing one's."""
    theta = torch.tensor([math.log(3.0), 0.0], requires_grad=True)
    logp = torch.log_softmax(theta, 0)
    moves = torch.tensor([0, 1])
    rewards = torch.tensor([1.0, -1.0])
    loss = reinforce_loss(logp[moves], rewards, games=2)
    assert loss.item() == pytest.approx(-0.5 * math.log(3.0))
    loss.backward()
    # d/dtheta0 of -(1/2)(log p0 - log p1) = -(1/2)((1 - p0) - (-p0)) = -1/2
    assert theta.grad.tolist() == pytest.approx([-0.5, 0.5])
    # one won game: -log p of its move; one lost game: +log p; a baseline shifts the reward
    lp = torch.tensor([math.log(0.75)])
    assert reinforce_loss(lp, torch.tensor([1.0]), 1).item() == pytest.approx(-math.log(0.75))
    assert reinforce_loss(lp, torch.tensor([-1.0]), 1).item() == pytest.approx(math.log(0.75))
    assert reinforce_loss(lp, torch.tensor([1.0]), 1, baseline=1.0).item() == 0.0
    # the scale is per game, not per move: two moves of one won game count twice
    two = torch.log(torch.tensor([0.5, 0.5]))
    assert reinforce_loss(two, torch.ones(2), 1).item() == pytest.approx(2 * math.log(2))


def test_reinforce_learns_the_winning_move():
    theta = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([theta], lr=0.5)
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        logp = torch.log_softmax(theta, 0)
        moves = torch.multinomial(logp.exp().detach(), 16, replacement=True, generator=gen)
        rewards = torch.where(moves == 0, 1.0, -1.0)
        loss = reinforce_loss(logp[moves], rewards, 16, baseline=rewards.mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.softmax(theta, 0)[0].item() > 0.95


# ---- PUCT -------------------------------------------------------------------------------------

def test_puct_selection_picks_what_the_formula_says():
    """Root visited 10 times; children (prior, visits, summed value): A (0.6, 6, 1.8),
    B (0.3, 3, 1.5), C (0.1, 1, 0.6). score = Q + c_puct * P * sqrt(10) / (1 + N)."""
    children = [(0.6, 6, 1.8), (0.3, 3, 1.5), (0.1, 1, 0.6)]
    ti = np.zeros((6, 8), np.int32)
    tf = np.zeros((K.N_STATS, 8))
    ti[K.FIRST, 0], ti[K.NCH, 0] = 1, 3
    tf[K.N, 0] = 10
    for i, (p, n, w) in enumerate(children, start=1):
        ti[K.FIRST, i] = -1
        tf[K.P, i], tf[K.N, i], tf[K.W, i] = p, n, w

    def by_hand(c_puct):
        return [w / n + c_puct * p * math.sqrt(10) / (1 + n) for p, n, w in children]

    params = np.zeros(K.N_PARAMS)
    params[K.C_PUCT] = MCTSConfig.puct().c_puct  # 1.5: A 0.707, B 0.856, C 0.837
    assert np.argmax(by_hand(1.5)) == 1
    assert K._select_child(ti, tf, 0, params) == 2  # node 2 is B: not the top prior nor top Q
    params[K.C_PUCT] = 10.0  # exploration dominates: A 3.01, B 2.87, C 2.18
    assert np.argmax(by_hand(10.0)) == 0
    assert K._select_child(ti, tf, 0, params) == 1
    params[K.C_PUCT] = 0.0  # greedy on Q: C (0.6) beats B (0.5)
    assert K._select_child(ti, tf, 0, params) == 3


# ---- networks and planes ----------------------------------------------------------------------

def test_policy_masks_illegal_moves_and_value_is_bounded():
    pos = Position(5, komi=0.5)
    for mv in ["C3", "B3", "C2"]:
        pos.play(text_to_move(mv, 5))
    torch.manual_seed(0)
    policy, value = PolicyNet(5).eval(), ValueNet(5).eval()
    x = torch.as_tensor(position_features(pos)[None])
    logits = policy(x)[0]
    legal = pos.legal_mask()
    assert (logits[torch.as_tensor(~legal)] == ILLEGAL_LOGIT).all()
    probs = torch.softmax(logits, 0)
    assert probs[torch.as_tensor(~legal)].sum().item() == 0.0
    assert probs[25].item() > 0  # the pass is always legal
    assert -1 <= value(x).item() <= 1


def test_leaf_planes_equal_position_planes():
    """What the search hands the evaluator gives the planes a game gives (simple ko, a ko
    point and a last move on the board)."""
    pos = Position.from_diagram("""
        . . . . .
        . X O . .
        X O . O .
        . X O . .
        . . . . .""", ko="simple")
    pos.play(text_to_move("C3", 5))  # Black takes the ko at B3
    assert pos.ko_point == text_to_move("B3", 5)
    leaves = Leaves(boards=pos.board[None].astype(np.int8), to_play=np.array([pos.to_play]),
                    last_move=np.array([pos.last_move]), ko_point=np.array([pos.ko_point]),
                    legal=pos.legal_mask()[None])
    np.testing.assert_array_equal(leaf_features(leaves)[0], position_features(pos))
    assert position_features(pos).shape == (len(NET_PLANES), 5, 5)


def test_random_symmetries_match_the_numpy_ones():
    x = torch.zeros(64, len(NET_PLANES), 5, 5)
    moves = torch.arange(64) % 26
    for i, m in enumerate(moves.tolist()):
        x[i, 0].view(-1)[min(m, 24)] = 1  # the pass puts nothing on the board
        x[i, 1] = torch.arange(25.0).view(5, 5)
    xt, mt = random_symmetries(x, moves, torch.Generator().manual_seed(1))
    seen = set()
    for i in range(64):
        k = next(k for k in range(8) if torch.equal(
            xt[i, 1], torch.as_tensor(transform_board(x[i, 1].numpy(), k).copy())))
        seen.add(k)
        assert mt[i].item() == transform_move(int(moves[i]), 5, k)
        if moves[i] < 25:
            assert xt[i, 0].view(-1)[mt[i]].item() == 1
    assert len(seen) > 4


def test_networks_file_round_trip(tmp_path):
    torch.manual_seed(0)
    policy, value = PolicyNet(5).eval(), ValueNet(5).eval()
    save_networks(tmp_path / "n.pt", size=5, komi=0.5, stage="value", policy=policy,
                  value=value)
    info, p2, v2 = load_networks(tmp_path / "n.pt")
    assert info == {"size": 5, "komi": 0.5, "stage": "value"}
    x = torch.as_tensor(position_features(Position(5))[None])
    assert torch.equal(p2(x), policy(x)) and torch.equal(v2(x), value(x))


def test_search_with_networks_plays_legal_moves():
    torch.manual_seed(0)
    policy, value = PolicyNet(5).eval(), ValueNet(5).eval()
    pos = Position(5, komi=0.5)
    for mv in ["C3", "C2"]:
        pos.play(text_to_move(mv, 5))
    ev = NetworkEvaluator(policy, value, device="cpu")
    leaves = Leaves(boards=pos.board[None].astype(np.int8), to_play=np.array([pos.to_play]),
                    last_move=np.array([pos.last_move]), ko_point=np.array([-1]),
                    legal=pos.legal_mask()[None])
    priors, values = ev(leaves)
    assert priors.sum() == pytest.approx(1.0) and (priors[0][~pos.legal_mask()] == 0).all()
    player = SearchPlayer(policy, value, MCTSConfig.puct(playouts=24, lambda_mix=0.5),
                          batch_size=4, device="cpu")
    move = player(pos)
    assert pos.is_legal(move)
    assert player.mcts.last.visits.sum() > 0
    with pytest.raises(ValueError, match="lambda_mix=1"):
        SearchPlayer(policy, None, MCTSConfig.puct(playouts=8))


def test_bf16_evaluator_agrees_with_fp32():
    torch.manual_seed(0)
    policy, value = PolicyNet(5).eval(), ValueNet(5).eval()
    positions = []
    for moves in (["C3", "C2"], ["B2", "D4", "C3"], []):
        pos = Position(5, komi=0.5)
        for mv in moves:
            pos.play(text_to_move(mv, 5))
        positions.append(pos)
    leaves = Leaves(boards=np.stack([p.board for p in positions]).astype(np.int8),
                    to_play=np.array([p.to_play for p in positions]),
                    last_move=np.array([p.last_move if p.last_move is not None else -1
                                        for p in positions]),
                    ko_point=np.full(3, -1), legal=np.stack([p.legal_mask() for p in positions]))
    priors, values = NetworkEvaluator(policy, value, device="cpu")(leaves)
    fast = NetworkEvaluator(copy.deepcopy(policy), copy.deepcopy(value), device="cpu",
                            precision="bf16")
    assert next(fast.policy.tower.parameters()).is_contiguous(memory_format=torch.channels_last)
    priors16, values16 = fast(leaves)
    assert priors16.dtype == values16.dtype == np.float32
    assert ((priors16 > 0) == (priors > 0)).all()  # the same legal moves
    assert np.abs(priors16 - priors).max() < 0.02 and np.abs(values16 - values).max() < 0.05
    with pytest.raises(ValueError, match="precision 'fp16': valid are fp32, bf16"):
        NetworkEvaluator(policy, value, device="cpu", precision="fp16")


# ---- the value network's data -----------------------------------------------------------------

def test_value_training_set_holds_one_position_per_game():
    spec = tiny_spec()
    torch.manual_seed(0)
    data = value_positions(spec, PolicyNet(5, spec.network), device="cpu")
    assert len(data["x"]) == len(data["z"]) == spec.value.games == 10
    assert sorted(data["game"].tolist()) == list(range(10))  # each game exactly once
    assert set(data["z"].tolist()) <= {-1.0, 1.0}
    assert len(set(data["ply"].tolist())) > 1  # drawn along the games, not one fixed ply
    # the same machinery, checked against each game: the position is one the game went
    # through, and z is the outcome for the side to move there
    rng = np.random.default_rng(3)
    net = PolicyNet(5, spec.network).eval()
    out = play_games(net, net, 6, size=5, komi=0.5, rng=rng, record="one")
    assert len(out["x"]) == 6 and (out["ply"] < out["lengths"]).all()
    black = out["x"][:, NET_PLANES.index("black_to_play")].reshape(6, -1)[:, 0] == 1
    mover = np.where(black, 1, 2)
    np.testing.assert_array_equal(out["z"], np.where(out["winners"] == mover, 1.0, -1.0))
    stones = out["x"][:, :2].sum(axis=(1, 2, 3))
    assert (stones <= out["ply"]).all()  # no more stones than moves played before it


class CountingNet(torch.nn.Module):
    """A policy network that counts the positions it was asked about."""

    def __init__(self, net):
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x):
        self.rows += len(x)
        return self.net(x)


def test_alphago_value_games_keep_the_position_after_the_random_move():
    torch.manual_seed(0)
    spec = tiny_spec()
    sl = CountingNet(PolicyNet(5, spec.network).eval())
    rl = CountingNet(PolicyNet(5, spec.network).eval())
    # U = 0 for every game: no SL move, the random move first, the kept position holds its one
    # stone and comes after one move
    out = alphago_value_games(sl, rl, 8, size=5, komi=0.5, rng=np.random.default_rng(1),
                              u_max=1)
    assert sl.rows == 0 and rl.rows > 0 and len(out["z"]) == 8
    assert (out["ply"] == 1).all() and (out["x"][:, :2].sum(axis=(1, 2, 3)) == 1).all()
    assert sorted(out["game"].tolist()) == list(range(8))
    assert set(out["z"].tolist()) <= {-1.0, 1.0}
    # U drawn up to 5: the SL policy plays the U moves before the random one in each kept game
    out = alphago_value_games(sl, rl, 8, size=5, komi=0.5, rng=np.random.default_rng(2),
                              u_max=6)
    assert len(set(out["ply"].tolist())) > 1 and ((out["ply"] >= 1) & (out["ply"] <= 6)).all()
    assert sl.rows >= (out["ply"] - 1).sum() > 0
    # through value_positions: exactly value.games positions, one per game
    spec = tiny_spec(value={"games": 10, "batch_games": 4, "sampling": "alphago",
                            "random_ply_max": 6, "train": {"epochs": 1}})
    data = value_positions(spec, rl.net, sl_net=sl.net, device="cpu")
    assert len(data["z"]) == 10 and len(set(data["game"].tolist())) == 10
    assert data["games_played"] >= 10
    # U up to the longest game: many games end before their random move, so some batches of
    # one keep nothing; still exactly value.games positions, one per game
    spec = tiny_spec(value={"games": 6, "batch_games": 1, "sampling": "alphago",
                            "random_ply_max": 75, "train": {"epochs": 1}})
    data = value_positions(spec, rl.net, sl_net=sl.net, device="cpu")
    assert len(data["z"]) == 6 and len(set(data["game"].tolist())) == 6
    assert data["games_played"] > 6
    with pytest.raises(ValueError, match="needs the SL policy"):
        value_positions(spec, rl.net, device="cpu")


# ---- the pipeline -----------------------------------------------------------------------------

@pytest.mark.skipif(not HAVE_GNUGO, reason="GNU Go is not installed (Debian package gnugo)")
def test_tiny_pipeline_on_5x5(store, capsys):
    assert main(["train", "go5-alphago-tiny", "--no-progress", "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    ids = dict(re.findall(r"go5-alphago-tiny (sl|rl|value): run ([0-9a-f]{32}) FINISHED", out))
    assert set(ids) == {"sl", "rl", "value"}
    client = Tracker(store, "lab").client
    runs = {stage: client.get_run(run_id) for stage, run_id in ids.items()}
    assert "parent_run" not in runs["sl"].data.tags
    assert runs["rl"].data.tags["parent_run"] == ids["sl"]
    assert runs["value"].data.tags["parent_run"] == ids["rl"]
    assert runs["value"].data.params["parent_run"] == ids["rl"]
    m = {stage: r.data.metrics for stage, r in runs.items()}
    assert 0 <= m["sl"]["test/top1"] <= m["sl"]["test/top5"] <= 1
    assert m["sl"]["test/top1"] > 1 / 26  # better than a uniform guess over 5x5's moves
    assert 0 <= m["rl"]["rl/win_rate_vs_sl"] <= 1
    assert m["value"]["data/positions"] == m["value"]["data/distinct_games"] == 64
    assert m["value"]["test/mse"] >= 0
    arts = [a.path for a in client.list_artifacts(ids["value"], "networks")]
    assert arts == ["networks/networks.pt"]
    assert main(["go", "match", f"run:{ids['value']}", "random", "--games", "2", "--size", "5",
                 "--komi", "0.5", "--tracking-uri", store]) == 0
    assert f"run:{ids['value']}: " in capsys.readouterr().out
    assert main(["go", "match", f"run:{ids['value'][:8]}:mcts=16", f"run:{ids['sl']}",
                 "--games", "1", "--size", "5", "--komi", "0.5", "--tracking-uri", store]) == 0
    assert main(["go", "match", f"run:{ids['value']}:mcts=16,batch=16,precision=bf16", "random",
                 "--games", "1", "--size", "5", "--komi", "0.5", "--tracking-uri", store]) == 0
    assert main(["go", "match", f"run:{ids['value']}:mcts=48,heuristics=true", "random",
                 "--games", "1", "--size", "5", "--komi", "0.5", "--tracking-uri", store]) == 0
    players = {text: build_run_player(f"run:{text}", text, seed=0, uri=store, size=5,
                                      options=_options)
               for text in (f"{ids['value']}:mcts=16,lambda=1",
                            f"{ids['value']}:mcts=16,heuristics=true",
                            f"{ids['value']}:mcts=16,heuristics=true,net_after=8",
                            f"{ids['value']}:mcts=16,heuristics=true,net_after=4,value_visits=8")}
    lam1, heur, beside, beside_v = players.values()
    assert lam1.evaluator.value is None  # lambda 1: playouts alone, the value net idle
    c = heur.mcts.config  # michi's search with the networks' priors and value beside it
    assert c.tree_priors and c.rave_bias > 0 and c.c_puct == 1.0 and c.expand_after == 8
    assert c.lambda_mix == 0.5 and heur.evaluator.value is not None
    assert beside.mcts.config.net_after == 8 and beside.evaluator.value is None  # no value_visits
    assert beside_v.mcts.config.value_visits == 8 and beside_v.evaluator.value is not None
    assert main(["go", "match", f"run:{ids['value']}:mcts=64,heuristics=true,net_after=4,"
                 "value_visits=8", "random", "--games", "1", "--size", "5", "--komi", "0.5",
                 "--tracking-uri", store]) == 0
    capsys.readouterr()
    assert main(["go", "match", f"run:{ids['value']}:mcts=16,precision=fp16", "random",
                 "--games", "1", "--size", "5", "--komi", "0.5", "--tracking-uri", store]) == 2
    assert "precision 'fp16': valid are fp32, bf16" in capsys.readouterr().err
    assert main(["go", "match", f"run:{ids['sl']}:mcts=16,net_after=4,value_visits=8", "random",
                 "--games", "1", "--size", "5", "--tracking-uri", store]) == 2
    assert "value_visits needs a value network" in capsys.readouterr().err
    assert main(["go", "match", f"run:{ids['value']}:mcts=16,net_after=0", "random",
                 "--games", "1", "--size", "5", "--tracking-uri", store]) == 2
    assert "greater than or equal to 1" in capsys.readouterr().err
    assert main(["train", "--resume", ids["rl"], "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert "does not resume" in err and f"stages=[rl] parent={ids['sl']}" in err


@pytest.mark.parametrize("argv, words", [
    (["train", "go5-alphago-tiny", "rl.lr=-1"], ["rl.lr", "greater than 0"]),
    (["train", "go5-alphago-tiny", "rl.bogus=1"], ["unknown key 'rl.bogus'"]),
    (["train", "go5-alphago-tiny", "stages=[rl]"], ["give parent=RUN_ID"]),
    (["train", "go5-alphago-tiny", "stages=[value,rl]", "parent=x"], ["order sl, rl, value"]),
    (["train", "go5-alphago-tiny", "stages=[rl]", "parent=abcdef99"],
     ["unknown run id 'abcdef99'"]),
    (["train", "go5-alphago-tiny", "expert.dir=nowhere"], ["not a folder of SGF files"]),
    (["train", "go5-alphago-tiny", "expert.random_opening=13"], ["must be 0..12 on 5x5"]),
    (["go", "match", "run:abc", "random"], ["unknown run id 'abc'"]),
    (["go", "match", "run:", "random"], ["give a run id"]),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, words, store, tmp_path,
                                                            capsys):
    assert_refused(argv + ["--tracking-uri", store], words, tmp_path, capsys)


@pytest.mark.parametrize("name", [n for n in preset_names() if "alphago" in n])
def test_alphago_presets_validate(name):
    spec = load_alphago_spec(name)
    assert spec.name == name and spec.stages == ["sl", "rl", "value"]
    assert spec.expert.random_opening <= spec.size * spec.size // 2


def test_imports_flow_downhill():
    code = ("import sys, agents.alphago, agents.alphago_nets, agents.alphago_play; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    code = ("import sys, lab.alphago_runner; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'agents', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
