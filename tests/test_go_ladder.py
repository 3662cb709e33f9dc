"""`lab go ladder` and the ratings behind it (envs.go.arena.elo_ratings)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from cli_helpers import assert_refused, files_under

from envs.go.arena import elo_ratings
from envs.go.sgf import load_sgf
from lab.cli import main
from lab.tracking import Tracker

ELO_PER_NAT = 400 / math.log(10)



def test_two_players_without_the_prior_match_the_closed_form():
    # A wins 3 of 4: p = 0.75, R_A - R_B = 400 log10(0.75 / 0.25) = 400 log10(3) = 190.85.
    # The variance of the difference (natural units) is 1 / (N p (1 - p)) = 1 / 0.75 = 4/3.
    games = [("A", "B", 1.0)] * 3 + [("A", "B", 0.0)]
    r = elo_ratings(games, "B", prior_draws=0)
    assert r["B"].elo == 0.0 and (r["B"].low, r["B"].high) == (0.0, 0.0)
    assert r["A"].elo == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert r["A"].elo == pytest.approx(190.85, abs=0.01)
    half = 1.959964 * math.sqrt(4 / 3) * ELO_PER_NAT  # 393.15
    assert r["A"].high - r["A"].elo == pytest.approx(half, rel=1e-6)
    assert r["A"].elo - r["A"].low == pytest.approx(half, rel=1e-6)
    assert (r["A"].games, r["A"].wins, r["A"].draws, r["A"].losses) == (4, 3, 0, 1)
    assert r["A"].score == 0.75 and r["B"].score == 0.25
    # anchored on A instead: the same difference, the other sign
    assert elo_ratings(games, "A", prior_draws=0)["B"].elo == pytest.approx(-190.85, abs=0.01)


def test_the_prior_is_one_virtual_draw_per_pair():
    # With the prior A has 3 + 1/2 points of 4 + 1 games: p = 0.7, 400 log10(7/3) = 147.19;
    # variance 1 / (5 * 0.7 * 0.3) = 1 / 1.05.
    games = [("A", "B", 1.0)] * 3 + [("B", "A", 1.0)]
    r = elo_ratings(games, "B")
    assert r["A"].elo == pytest.approx(400 * math.log10(7 / 3), abs=1e-6)
    assert r["A"].elo == pytest.approx(147.19, abs=0.01)
    half = 1.959964 * math.sqrt(1 / 1.05) * ELO_PER_NAT
    assert r["A"].high - r["A"].low == pytest.approx(2 * half, rel=1e-6)
    # the record counts real games only
    assert (r["A"].games, r["A"].wins, r["A"].losses) == (4, 3, 1)
    # a perfect score stays finite with the prior: 4.5 of 5, 400 log10(9) = 381.70 ...
    perfect = [("A", "B", 1.0)] * 4
    assert elo_ratings(perfect, "B")["A"].elo == pytest.approx(400 * math.log10(9), abs=1e-6)
    # ... and has no finite maximum without it
    with pytest.raises(ValueError, match="no finite"):
        elo_ratings(perfect, "B", prior_draws=0)


def test_three_players_with_transitive_results_are_ordered():
    games = ([("A", "B", 1.0)] * 3 + [("B", "A", 1.0)] + [("B", "C", 1.0)] * 3
             + [("C", "B", 0.5)] + [("A", "C", 1.0)] * 4)
    r = elo_ratings(games, "C")
    assert r["C"].elo == 0.0
    assert r["A"].elo > r["B"].elo > r["C"].elo
    assert r["A"].low < r["A"].elo < r["A"].high
    assert r["B"].draws == 1 and r["C"].draws == 1 and r["C"].score == pytest.approx(0.5 / 8)
    # moving the anchor shifts every rating by the same amount
    s = elo_ratings(games, "A")
    assert s["A"].elo == 0.0
    for p in "ABC":
        assert s[p].elo == pytest.approx(r[p].elo - r["A"].elo, abs=1e-6)


def test_bad_ratings_input():
    with pytest.raises(ValueError, match="anchor"):
        elo_ratings([("A", "B", 1.0)], "C")
    with pytest.raises(ValueError, match="score"):
        elo_ratings([("A", "B", 2.0)], "A")


def test_ladder_logs_ratings_pairs_and_sgfs(store, tmp_path, capsys):
    players = ["random:seed=1", "random:seed=2", "mcts:playouts=30"]
    argv = ["go", "ladder", *players, "--games-per-pair", "2", "--size", "5", "--komi", "0.5",
            "--tracking-uri", store, "--sgf-dir", str(tmp_path / "games")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "game 6/6:" in out and "Elo relative to random:seed=1 = 0" in out
    table = [line.split()[0] for line in out.splitlines() if line.startswith(tuple(players))]
    assert table[0] == "mcts:playouts=30"  # sorted by Elo
    tracker = Tracker(store, "go-ladder")
    (run,) = tracker.client.search_runs([tracker.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["lab.kind"] == "go-ladder"
    params = run.data.params
    assert params["players"] == ", ".join(players) and params["games_per_pair"] == "2"
    assert params["anchor"] == "random:seed=1" and params["size"] == "5"
    assert {"komi", "seconds_per_move"} <= set(params)
    m = run.data.metrics
    assert m["games"] == 6.0 and m["elo/random_seed_1"] == 0.0
    assert m["elo/mcts_playouts_30"] > max(m["elo/random_seed_1"], m["elo/random_seed_2"])
    assert m["elo_low95/mcts_playouts_30"] < m["elo/mcts_playouts_30"]
    root = {f.path for f in tracker.client.list_artifacts(run.info.run_id)}
    assert {"ladder.csv", "ladder.md", "pairs.csv", "sgf"} <= root
    sgfs = [f.path for f in tracker.client.list_artifacts(run.info.run_id, "sgf")]
    assert sgfs == [f"sgf/game-{k:03d}.sgf" for k in range(6)]
    assert files_under(tmp_path / "games") == [f"game-{k:03d}.sgf" for k in range(6)]
    _, info = load_sgf(tmp_path / "games" / "game-001.sgf")  # colours alternate in a pair
    assert (info.black, info.white) == ("random:seed=2", "random:seed=1")

    def rows(name):
        local = tracker.client.download_artifacts(run.info.run_id, name, str(tmp_path))
        with open(local, newline="") as f:
            return list(csv.DictReader(f))

    ladder = rows("ladder.csv")
    assert [r["player"] for r in ladder][0] == "mcts:playouts=30"
    assert float(ladder[0]["elo"]) == pytest.approx(m["elo/mcts_playouts_30"], abs=0.05)
    assert all(r["games"] == "4" for r in ladder)
    pairs = rows("pairs.csv")
    assert [(r["player_a"], r["player_b"]) for r in pairs] == [
        ("random:seed=1", "random:seed=2"), ("random:seed=1", "mcts:playouts=30"),
        ("random:seed=2", "mcts:playouts=30")]
    assert all(int(r["wins_a"]) + int(r["draws"]) + int(r["wins_b"]) == 2 for r in pairs)
    md = Path(tracker.client.download_artifacts(run.info.run_id, "ladder.md", str(tmp_path)))
    assert "| `mcts:playouts=30` |" in md.read_text()


@pytest.mark.parametrize("players, extra, words", [
    (["random"], [], ["at least two players, got 1"]),
    ([], [], ["at least two players, got 0"]),
    (["random", "mcts:playouts=30", "random"], [], ["'random' is given twice"]),
    (["random", "mcts:playouts=30"], ["--anchor", "gnugo"], ["--anchor 'gnugo'", "valid: random"]),
    (["random", "alphago"], [], ["unknown player 'alphago'"]),
    (["random", "mcts:bogus=1"], [], ["bogus", "mcts options"]),
    (["random", "random:seed=2"], ["--games-per-pair", "0"], ["at least one game"]),
    (["random", "random:seed=2"], ["--size", "4"], ["board size must be 5..19"]),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(players, extra, words, store,
                                                            tmp_path, capsys):
    argv = ["go", "ladder", *players, *extra, "--tracking-uri", store,
            "--sgf-dir", str(tmp_path / "games")]
    assert_refused(argv, words, tmp_path, capsys)
