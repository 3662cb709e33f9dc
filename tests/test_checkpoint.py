import random
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from lab.checkpoint import (
    Checkpointer,
    NonFiniteLossError,
    check_finite,
    load,
    rng_state,
    save_atomic,
    set_rng_state,
)


def test_save_load_round_trip(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 7, "name": "x", "nested": {"a": [1, 2]}}
    path = save_atomic(state, tmp_path / "c.pt")
    back = load(path)
    assert torch.equal(back["w"], state["w"])
    assert back["step"] == 7 and back["nested"] == {"a": [1, 2]}


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = save_atomic({"v": torch.zeros(3)}, tmp_path / "c.pt")

    def torn_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError):
        save_atomic({"v": torch.ones(3)}, path)
    monkeypatch.undo()
    assert torch.equal(load(path)["v"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


WRITER = """
import sys, torch
from lab.checkpoint import save_atomic
i = 0
while True:
    save_atomic({"i": i, "w": torch.full((256, 1024), float(i))}, sys.argv[1])
    i += 1
"""


def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    rng = random.Random(0)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
        ckpt = load(path)
        assert torch.all(ckpt["w"] == float(ckpt["i"]))


def test_rng_state_round_trip(tmp_path):
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    save_atomic({"rng": state}, tmp_path / "r.pt")
    set_rng_state(load(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_generator_state_round_trip(tmp_path):
    from lab.checkpoint import generator_state, set_generator_state

    rng = np.random.default_rng(7)
    rng.random(3)
    save_atomic({"g": generator_state(rng)}, tmp_path / "g.pt")
    expected = rng.random(4)
    other = np.random.default_rng(0)
    set_generator_state(other, load(tmp_path / "g.pt")["g"])
    assert np.array_equal(other.random(4), expected)


def test_checkpointer_saves_every_n_steps(tmp_path):
    ckpt = Checkpointer(tmp_path, every=100)
    saved = [step for step in range(0, 501, 10) if ckpt.maybe_save(step, lambda: {"x": 1})]
    assert saved == [100, 200, 300, 400, 500]
    assert load(ckpt.path)["step"] == 500
    assert Checkpointer(tmp_path, every=0).maybe_save(1000, lambda: {}) is False


def test_check_finite_names_the_loss_and_step():
    check_finite({"loss/a": 1.0}, step=3)
    with pytest.raises(NonFiniteLossError, match=r"loss/b=nan at step 42"):
        check_finite({"loss/a": 1.0, "loss/b": float("nan")}, step=42)
    with pytest.raises(NonFiniteLossError, match="inf"):
        check_finite({"loss/c": float("inf")}, step=1)
