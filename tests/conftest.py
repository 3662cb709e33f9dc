import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def _migrated_store(tmp_path_factory) -> Path:
    """One SQLite mlflow store, migrated once per session (a fresh one takes ~2 s)."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(_migrated_store, tmp_path, monkeypatch) -> str:
    """A private copy of the migrated store under tmp_path/runs; the test runs in tmp_path, so
    everything a run writes (checkpoints, artifacts) lands there, never in the repo's runs/."""
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copy(_migrated_store, runs / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{runs / 'mlflow.db'}"
