"""Shared checks of the CLI tests: what a refused command (bad input) must leave behind."""

from __future__ import annotations

from pathlib import Path

from lab.cli import main


def files_under(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def assert_refused(argv: list[str], words, root: Path, capsys) -> str:
    """``lab argv`` exits 2 with one error line holding every one of ``words``, and leaves
    the files under ``root`` and the store ``root/runs/mlflow.db`` (when there is one) as
    they were. Returns the line."""
    before = files_under(root)
    db = root / "runs" / "mlflow.db"
    db_bytes = db.read_bytes() if db.is_file() else None
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    for word in words:
        assert word in err, err
    assert files_under(root) == before
    assert (db.read_bytes() if db.is_file() else None) == db_bytes
    return err
