"""``lab go gtp | match | ladder | play | replay``: the Go engine from the command line.

Players are given as specs, built here (so envs/go never imports agents/):

    random[:seed=N]                     uniform over legal moves
    mcts[:playouts=N,seconds=S,...]     agents.mcts.MCTS; any MCTSConfig field
    gnugo[:level=N]                     GNU Go 3.8 over GTP (Debian package gnugo)
    run:RUN_ID[:mcts=N,greedy=false]    an AlphaGo stage run's networks: the policy, or MCTS
                                        with them (lab/alphago_runner.py)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lab.commands import CommandError
from lab.spec import SpecError, parse_value

PLAYER_KINDS = ("random[:seed=N], mcts[:playouts=N,seconds=S,...], gnugo[:level=N], "
                "run:RUN_ID[:mcts=N]")


class Players:
    """Players built from specs; ``close()`` stops GNU Go subprocesses."""

    def __init__(self, tracking_uri: str | None = None, size: int | None = None):
        self._open = []
        self.tracking_uri, self.size = tracking_uri, size  # where run:RUN_ID players are

    def build(self, spec: str, *, seed: int = 0):
        kind, _, rest = spec.partition(":")
        if kind == "run":
            from lab.alphago_runner import build_run_player

            return build_run_player(spec, rest, seed=seed, uri=self.tracking_uri,
                                    size=self.size, options=_options)
        opts = _options(spec, rest)
        if kind == "random":
            from envs.go.env import RandomPlayer

            _only(spec, opts, {"seed"})
            return RandomPlayer(seed=int(opts.get("seed", seed)))
        if kind == "mcts":
            from pydantic import ValidationError

            from agents.mcts import MCTS, MCTSConfig

            try:
                return MCTS(MCTSConfig(**{"seed": seed, **opts}))
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(x) for x in err["loc"]) or "options"
                valid = ", ".join(MCTSConfig.model_fields)
                raise SpecError(f"player {spec!r}: {where}: {err['msg']} "
                                f"(mcts options: {valid})") from None
        if kind == "gnugo":
            from envs.go.gnugo import GnuGoNotFound, GnuGoPlayer

            _only(spec, opts, {"level"})
            level = opts.get("level", 1)
            if not isinstance(level, int) or not 0 <= level <= 10:
                raise SpecError(f"player {spec!r}: level must be an integer 0..10")
            try:
                player = GnuGoPlayer(level=level, seed=seed)
            except GnuGoNotFound as e:
                raise CommandError(str(e)) from None
            self._open.append(player)
            return player
        raise SpecError(f"unknown player {spec!r} (valid: {PLAYER_KINDS})")

    def close(self):
        for p in self._open:
            p.close()
        self._open.clear()


def _options(spec: str, text: str) -> dict:
    opts = {}
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise SpecError(f"player {spec!r}: options are key=value separated by commas")
        opts[key.strip()] = parse_value(value.strip())
    return opts


def _only(spec: str, opts: dict, allowed: set[str]) -> None:
    extra = sorted(set(opts) - allowed)
    if extra:
        raise SpecError(f"player {spec!r}: unknown option {extra[0]!r} "
                        f"(valid: {', '.join(sorted(allowed))})")


def _check_board(size: int, komi: float) -> None:
    if not 5 <= size <= 19:
        raise SpecError(f"--size {size}: the board size must be 5..19")
    if komi != komi or abs(komi) > 1000:
        raise SpecError(f"--komi {komi}: not a usable komi")


# ---- gtp --------------------------------------------------------------------------------

def run_gtp(args) -> int:
    from envs.go.gtp import GtpEngine

    _check_board(args.size, args.komi)
    players = Players(size=args.size)
    try:
        player = players.build(args.player, seed=args.seed)
        engine = GtpEngine(player, name=f"lab-{args.player.partition(':')[0]}",
                           size=args.size, komi=args.komi, ko=args.ko)
        engine.serve()
    finally:
        players.close()
    return 0


# ---- match ------------------------------------------------------------------------------

def run_match(args) -> int:
    import math

    from envs.go.arena import elo_difference, play_game, wilson_interval
    from envs.go.sgf import write_sgf
    from lab.tracking import Tracker

    _check_board(args.size, args.komi)
    if args.games < 1:
        raise SpecError(f"--games {args.games}: play at least one game")
    if args.seconds_per_move is not None and args.seconds_per_move <= 0:
        raise SpecError(f"--seconds-per-move {args.seconds_per_move}: must be positive")
    players = Players(args.tracking_uri, args.size)
    try:
        a = players.build(args.black, seed=args.seed)
        b = players.build(args.white, seed=args.seed + 1)
        for p in (a, b):
            if args.seconds_per_move is not None and hasattr(p, "seconds_per_move"):
                p.seconds_per_move = args.seconds_per_move
        tracker = Tracker(args.tracking_uri, args.experiment)
        tracker.start({"black": args.black, "white": args.white, "games": args.games,
                       "size": args.size, "komi": args.komi,
                       "seconds_per_move": args.seconds_per_move, "seed": args.seed},
                      {"lab.kind": "go-match", "player_a": args.black, "player_b": args.white},
                      run_name=f"{args.black} vs {args.white}")
        wins = 0
        times = {"a": [], "b": []}
        status = "FAILED"
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for g in range(args.games):
                    a_black = g % 2 == 0
                    black, white = (a, b) if a_black else (b, a)
                    rec = play_game(black, white, size=args.size, komi=args.komi)
                    a_color = 1 if a_black else 2
                    won = rec.winner == a_color
                    wins += won
                    times["a"] += rec.seconds[a_color]
                    times["b"] += rec.seconds[3 - a_color]
                    names = (args.black, args.white) if a_black else (args.white, args.black)
                    sgf_path = Path(tmp) / f"game-{g:03d}.sgf"
                    sgf_path.write_bytes(write_sgf(rec.position, black=names[0], white=names[1],
                                                   result=rec.result,
                                                   comment=rec.forfeit))
                    tracker.log_artifact(sgf_path, "sgf")
                    tracker.logger.log({"match/a_won": float(won),
                                        "match/a_win_rate": wins / (g + 1),
                                        "match/moves": float(len(rec.position.moves))}, step=g)
                    line = f"game {g + 1}/{args.games}: {names[0]} (B) vs {names[1]} (W): "
                    print(line + rec.result + (f"  [{rec.forfeit}]" if rec.forfeit else ""),
                          flush=True)
            rate = wins / args.games
            low, high = wilson_interval(wins, args.games)
            sec = {k: (sum(v) / len(v) if v else math.nan) for k, v in times.items()}
            final = {"match/wins_a": float(wins), "match/win_rate_a": rate,
                     "match/win_rate_a_low95": low, "match/win_rate_a_high95": high,
                     "match/elo_a_minus_b": _finite(elo_difference(rate)),
                     "match/seconds_per_move_a": sec["a"], "match/seconds_per_move_b": sec["b"]}
            tracker.logger.log(final, step=args.games)
            status = "FINISHED"
        finally:
            tracker.finish(status)
    finally:
        players.close()
    elo = elo_difference(rate)
    print(f"{args.black}: {wins}/{args.games} wins against {args.white} "
          f"(win rate {rate:.1%}, 95% CI {low:.1%}-{high:.1%}; Elo difference {elo:+.0f}); "
          f"seconds/move {sec['a']:.2f} vs {sec['b']:.2f}")
    print(f"run {tracker.run_id} in {tracker.uri} (SGFs under its artifacts/sgf)")
    return 0


def _finite(x: float, cap: float = 2000.0) -> float:
    return max(-cap, min(cap, x))


# ---- ladder -----------------------------------------------------------------------------

LADDER_PRIOR_DRAWS = 1.0  # virtual draws between every pair (envs.go.arena.elo_ratings)


def run_ladder(args) -> int:
    """A round robin: every pair of players plays ``--games-per-pair`` games, colours
    alternating; maximum-likelihood Elo ratings (``envs.go.arena.elo_ratings``, the anchor at
    0) with 95% intervals, printed and logged to one mlflow run with the SGFs."""
    from envs.go.arena import elo_ratings, play_game
    from envs.go.sgf import write_sgf
    from lab.tracking import Tracker

    specs = list(args.players)
    if len(specs) < 2:
        raise SpecError(f"a ladder needs at least two players, got {len(specs)} "
                        f"(players: {PLAYER_KINDS})")
    dupes = sorted({s for s in specs if specs.count(s) > 1})
    if dupes:
        raise SpecError(f"player {dupes[0]!r} is given twice (give a different seed or option, "
                        f"e.g. random:seed=1 random:seed=2)")
    _check_board(args.size, args.komi)
    if args.games_per_pair < 1:
        raise SpecError(f"--games-per-pair {args.games_per_pair}: play at least one game")
    if args.seconds_per_move is not None and args.seconds_per_move <= 0:
        raise SpecError(f"--seconds-per-move {args.seconds_per_move}: must be positive")
    anchor = args.anchor if args.anchor is not None else _default_anchor(specs)
    if anchor not in specs:
        raise SpecError(f"--anchor {anchor!r}: not one of the players "
                        f"(valid: {', '.join(specs)})")
    sgf_dir = Path(args.sgf_dir) if args.sgf_dir else None
    if sgf_dir is not None and sgf_dir.exists() and not sgf_dir.is_dir():
        raise SpecError(f"--sgf-dir {args.sgf_dir}: is a file, not a folder")
    slugs = _slugs(specs)
    pairs = [(i, j) for i in range(len(specs)) for j in range(i + 1, len(specs))]
    n_games = len(pairs) * args.games_per_pair

    players = Players(args.tracking_uri, args.size)
    try:
        built = [players.build(spec, seed=args.seed + k) for k, spec in enumerate(specs)]
        for p in built:
            if args.seconds_per_move is not None and hasattr(p, "seconds_per_move"):
                p.seconds_per_move = args.seconds_per_move
        tracker = Tracker(args.tracking_uri, args.experiment)
        tracker.start({"players": ", ".join(specs), "games_per_pair": args.games_per_pair,
                       "size": args.size, "komi": args.komi,
                       "seconds_per_move": args.seconds_per_move, "anchor": anchor,
                       "seed": args.seed, "prior_draws": LADDER_PRIOR_DRAWS},
                      {"lab.kind": "go-ladder", "players": ", ".join(specs)},
                      run_name=f"ladder of {len(specs)}: " + ", ".join(specs))
        results: list[tuple[str, str, float]] = []
        status = "FAILED"
        try:
            with tempfile.TemporaryDirectory() as tmp:
                games_dir = sgf_dir or Path(tmp) / "sgf"
                games_dir.mkdir(parents=True, exist_ok=True)
                k = 0
                for i, j in pairs:
                    for g in range(args.games_per_pair):
                        b, w = (i, j) if g % 2 == 0 else (j, i)
                        rec = play_game(built[b], built[w], size=args.size, komi=args.komi)
                        black_score = 0.5 if rec.score == 0 else float(rec.winner == 1)
                        results.append((specs[b], specs[w], black_score))
                        sgf_path = games_dir / f"game-{k:03d}.sgf"
                        sgf_path.write_bytes(write_sgf(rec.position, black=specs[b],
                                                       white=specs[w], result=rec.result,
                                                       comment=rec.forfeit))
                        tracker.log_artifact(sgf_path, "sgf")
                        k += 1
                        print(f"game {k}/{n_games}: {specs[b]} (B) vs {specs[w]} (W): "
                              + rec.result + (f"  [{rec.forfeit}]" if rec.forfeit else ""),
                              flush=True)
                ratings = elo_ratings(results, anchor, prior_draws=LADDER_PRIOR_DRAWS)
                order = sorted(specs, key=lambda s: -round(ratings[s].elo, 6))  # ties: given order
                metrics = {"games": float(n_games)}
                for spec in specs:
                    r = ratings[spec]
                    metrics.update({f"elo/{slugs[spec]}": r.elo,
                                    f"elo_low95/{slugs[spec]}": r.low,
                                    f"elo_high95/{slugs[spec]}": r.high,
                                    f"score/{slugs[spec]}": r.score})
                tracker.logger.log(metrics, step=n_games)
                out = Path(tmp)
                rows = _ladder_rows(order, ratings)
                (out / "ladder.csv").write_text(_csv(
                    ["player", "slug", "elo", "elo_low95", "elo_high95", "games", "wins",
                     "draws", "losses", "score"],
                    [[s, slugs[s], *row[1:]] for s, row in zip(order, rows, strict=True)]))
                (out / "ladder.md").write_text(_ladder_markdown(order, ratings, anchor, args))
                (out / "pairs.csv").write_text(_pairs_csv(specs, pairs, results))
                for name in ("ladder.csv", "ladder.md", "pairs.csv"):
                    tracker.log_artifact(out / name)
            status = "FINISHED"
        finally:
            tracker.finish(status)
    finally:
        players.close()
    print(_ladder_table(order, ratings, anchor))
    where = f"; SGFs also in {sgf_dir}" if sgf_dir else ""
    print(f"run {tracker.run_id} in {tracker.uri} (ladder.md, pairs.csv, SGFs under its "
          f"artifacts{where})")
    return 0


def _default_anchor(specs: list[str]) -> str:
    """The first ``random`` player (a fixed zero point), else the first player."""
    return next((s for s in specs if s.partition(":")[0] == "random"), specs[0])


def _slugs(specs: list[str]) -> dict[str, str]:
    """A metric-key-safe name per player spec, unique: ``mcts:playouts=30`` ->
    ``mcts_playouts_30``."""
    import re

    out: dict[str, str] = {}
    for spec in specs:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec).strip("_") or "player"
        slug, n = base, 2
        while slug in out.values():
            slug, n = f"{base}-{n}", n + 1
        out[spec] = slug
    return out


def _ladder_rows(order, ratings) -> list[list]:
    return [[s, round(ratings[s].elo, 1), round(ratings[s].low, 1), round(ratings[s].high, 1),
             ratings[s].games, ratings[s].wins, ratings[s].draws, ratings[s].losses,
             round(ratings[s].score, 4)] for s in order]


def _ladder_table(order, ratings, anchor) -> str:
    head = ["player", "Elo", "95% interval", "games", "wins", "draws", "score"]
    rows = [[s, f"{r.elo:+.0f}", f"{r.low:+.0f} .. {r.high:+.0f}", str(r.games), str(r.wins),
             str(r.draws), f"{r.score:.1%}"] for s, r in ((s, ratings[s]) for s in order)]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    lines = ["  ".join(x.ljust(w) if c == 0 else x.rjust(w)
                       for c, (x, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"(Elo relative to {anchor} = 0; 95% interval of the difference to it; "
                 f"prior: {LADDER_PRIOR_DRAWS:g} virtual draw per pair)")
    return "\n".join(lines)


def _ladder_markdown(order, ratings, anchor, args) -> str:
    lines = [f"# Go ladder: {args.size}x{args.size}, komi {args.komi:g}, "
             f"{args.games_per_pair} games per pair",
             "",
             f"Elo relative to `{anchor}` = 0 (maximum likelihood, "
             f"{LADDER_PRIOR_DRAWS:g} virtual draw per pair); 95% interval of the difference "
             "to the anchor.",
             "",
             "| player | Elo | 95% interval | games | wins | draws | score |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s in order:
        r = ratings[s]
        lines.append(f"| `{s}` | {r.elo:+.0f} | {r.low:+.0f} .. {r.high:+.0f} | {r.games} | "
                     f"{r.wins} | {r.draws} | {r.score:.1%} |")
    return "\n".join(lines) + "\n"


def _pairs_csv(specs, pairs, results) -> str:
    rows = []
    for i, j in pairs:
        a, b = specs[i], specs[j]
        scores = [s if x == a else 1.0 - s for x, y, s in results if {x, y} == {a, b}]
        wins, draws = sum(s == 1.0 for s in scores), sum(s == 0.5 for s in scores)
        rows.append([a, b, len(scores), wins, draws, len(scores) - wins - draws,
                     round(sum(scores) / len(scores), 4)])
    return _csv(["player_a", "player_b", "games", "wins_a", "draws", "wins_b", "score_a"], rows)


def _csv(header: list[str], rows: list[list]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# ---- play / replay ----------------------------------------------------------------------

def run_play(args) -> int:
    from envs.go import BLACK, WHITE, Position
    from envs.go.play_window import NoDisplayError, play_game

    _check_board(args.size, args.komi)
    players = Players()
    try:
        opponent = players.build(args.opponent, seed=args.seed)
        human = BLACK if args.color == "black" else WHITE
        try:
            final = play_game(Position(args.size, args.komi), opponent, human_color=human)
        except NoDisplayError as e:
            raise CommandError(str(e)) from None
    finally:
        players.close()
    if final.is_over:
        print(f"game over: {final.score():+g} (Black minus White, komi {final.komi:g})")
    return 0


def run_replay(args) -> int:
    from envs.go.replay import game_frames
    from envs.go.sgf import SgfError, load_sgf
    from lab.render import write_video

    out = Path(args.out)
    if out.suffix.lower() not in (".gif", ".mp4"):
        raise SpecError(f"--out {out.name!r}: the file must end in .gif or .mp4")
    if args.fps <= 0:
        raise SpecError(f"--fps {args.fps}: must be positive")
    try:
        position, info = load_sgf(args.sgf, ko=args.ko)
    except SgfError as e:
        raise SpecError(str(e)) from None
    names = (info.black or "Black", info.white or "White")
    frames = game_frames(position, names=names, result=info.result)
    write_video(frames, out, fps=args.fps)
    print(f"{len(frames)} frames -> {out}")
    return 0


# ---- expert-games -----------------------------------------------------------------------

def run_expert_games(args) -> int:
    import time

    from envs.go.expert import expert_games
    from envs.go.gnugo import GnuGoNotFound, find_gnugo
    from envs.go.gtp import result_text

    _check_board(args.size, args.komi)
    if args.games < 1:
        raise SpecError(f"--games {args.games}: make at least one game")
    if not 0 <= args.level <= 10:
        raise SpecError(f"--level {args.level}: GNU Go levels are 0..10")
    most = args.size * args.size // 2
    if not 0 <= args.random_opening <= most:
        raise SpecError(f"--random-opening {args.random_opening}: must be 0..{most} on "
                        f"{args.size}x{args.size}")
    if args.workers < 1:
        raise SpecError(f"--workers {args.workers}: must be >= 1 (GNU Go processes)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {args.out}: is a file, not a folder")
    try:
        find_gnugo()
    except GnuGoNotFound as e:
        raise CommandError(str(e)) from None
    start = time.perf_counter()

    def report(i, path, position):
        print(f"game {i + 1}/{args.games}: {position.move_number} plies, "
              f"{result_text(position.score())} -> {path}", flush=True)

    paths = expert_games(args.size, args.games, args.level, args.seed, out,
                         random_opening_moves=args.random_opening, komi=args.komi,
                         workers=args.workers, progress=report)
    print(f"{len(paths)} games of GNU Go level {args.level} on {args.size}x{args.size} in "
          f"{time.perf_counter() - start:.1f} s -> {out}")
    return 0
