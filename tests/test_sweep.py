"""``lab sweep`` on Ray Tune: trials land in one store, failures and resumes, bad input.

The Ray tests share one local Ray (2 CPUs) started once for the module: a Ray start costs
seconds on a 2-core machine. Trials are cartpole-ppo-fast cut to 512 steps (2 PPO updates), 16,384
in the test that checks the copies of two concurrent trials' metrics.
"""

import importlib.util
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

from lab import sweep, sweep_ray
from lab.cli import main
from lab.tracking import Tracker

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAS_RAY, reason='Ray Tune is not installed (pip install -e ".[distributed]")')
TINY = ["cartpole-ppo-fast", "train.steps=512", "train.gif=false", "train.eval_episodes=2"]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture
def sweep_store(store, _migrated_store) -> str:
    """The test's store, plus the migrated empty store that private trial stores copy."""
    template = sweep_ray.template_store()
    template.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(_migrated_store, template)
    return store


def sweep_runs(store: str, name: str):
    tracker = Tracker(store)
    return tracker.client, sweep_ray.sweep_runs(tracker.client, tracker.experiment_id, name)


def history(client, run_id: str, key: str):
    return sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key))


@needs_ray
def test_two_concurrent_trials_land_in_the_store_with_every_metric_then_resume(
        ray_local, sweep_store, tmp_path, capsys):
    from mlflow import MlflowClient

    assert main(["sweep", *TINY, "train.steps=16384", "--grid", "agent.lr=1e-3,3e-4",
                 "--max-concurrent", "2", "--name", "sw", "--tracking-uri", sweep_store]) == 0
    out = capsys.readouterr().out
    assert "sweep sw: 2 trials" in out and out.count("FINISHED") >= 2
    client, runs = sweep_runs(sweep_store, "sw")
    assert len(runs) == 2
    assert sorted(r.data.params["agent.lr"] for r in runs) == ["0.0003", "0.001"]
    for run in runs:
        tags = run.data.tags
        assert run.info.status == "FINISHED"
        assert tags["group"] == "sw" and tags["sweep"] == "sw" and tags["agent"] == "ppo"
        assert "eval/return_mean" in run.data.metrics
        assert {"spec.yaml", "checkpoint"} <= {f.path for f in
                                              client.list_artifacts(run.info.run_id)}
        # every metric point of the trial's private store is in the main store
        src = MlflowClient(tracking_uri=f"sqlite:///{tags['sweep.trial_store']}")
        (private,) = src.search_runs([e.experiment_id for e in src.search_experiments()])
        assert private.data.params == run.data.params
        assert set(private.data.metrics) == set(run.data.metrics)
        for key in private.data.metrics:
            assert history(client, run.info.run_id, key) == history(
                src, private.info.run_id, key), key
        assert len(history(client, run.info.run_id, "train/episode_return")) > 5
    # the two trials ran at the same time (from when their processes took them up to the end
    # of their runs), each writing its own store
    spans = [(int(r.data.tags["sweep.started"]), r.info.end_time) for r in runs]
    assert max(a for a, _ in spans) < min(b for _, b in spans), spans

    best = tmp_path / "runs" / "sweeps" / "sw" / "best.yaml"
    assert f"lab train {Path('runs/sweeps/sw/best.yaml')}" in out
    from agents import agent_configs
    from lab.commands import env_ids
    from lab.spec import load_spec

    spec = load_spec(str(best), [], agent_configs(), env_ids())
    assert spec.name == "sw-best" and spec.agent.lr in (1e-3, 3e-4)
    assert spec.train.steps == 16384
    assert main(["compare", "--group", "sw", "--no-log", "--format", "csv",
                 "--tracking-uri", sweep_store]) == 0
    assert "\nppo,CartPole-v1,2," in capsys.readouterr().out

    # an interrupted sweep: one trial's run did not finish; --resume runs only that one
    killed, kept = runs
    client.set_terminated(killed.info.run_id, status="KILLED")
    assert main(["sweep", "--resume", "sw", "--tracking-uri", sweep_store]) == 0
    out = capsys.readouterr().out
    assert "1 trial(s) already FINISHED" in out and "1 trial(s) on Ray Tune" in out
    _, after = sweep_runs(sweep_store, "sw")
    by_trial = {}
    for r in after:
        by_trial.setdefault(r.data.tags["sweep.trial"], []).append(r)
    assert [r.info.run_id for r in by_trial[kept.data.tags["sweep.trial"]]] == [kept.info.run_id]
    assert sorted(r.info.status for r in by_trial[killed.data.tags["sweep.trial"]]) == [
        "FINISHED", "KILLED"]


@needs_ray
def test_a_failing_trial_is_reported_and_the_other_finishes(ray_local, sweep_store, capsys):
    # a valid spec whose env cannot be made: the trial raises inside training
    assert main(["sweep", *TINY, "--grid", "env.kwargs.max_episode_steps=200,oops",
                 "--name", "bad", "--tracking-uri", sweep_store]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "TypeError" in out and "max_episode_steps" in out
    client, runs = sweep_runs(sweep_store, "bad")
    status = {r.data.params["env.kwargs.max_episode_steps"]: r for r in runs}
    assert status["200"].info.status == "FINISHED"
    failed = status["oops"]
    assert failed.info.status == "FAILED" and failed.data.tags["group"] == "bad"
    assert "TypeError" in failed.data.tags["sweep.error"]
    assert "sweep_error.txt" in {f.path for f in client.list_artifacts(failed.info.run_id)}
    assert (Path("runs/sweeps/bad/best.yaml")).is_file()


def test_a_run_that_died_mid_training_is_copied_whole_and_marked_failed(_migrated_store, store,
                                                                        tmp_path):
    private = tmp_path / "trial.db"
    shutil.copy(_migrated_store, private)
    src = Tracker(f"sqlite:///{private}")
    src.start(params={"agent.lr": 0.001}, tags={"sweep": "x", "group": "x"}, run_name="t")
    for step in range(1, 1501):
        src.logger.log({"train/episode_return": float(step), "loss/value": 1.0 / step}, step)
    src.logger.flush()  # and then the process died: the run stays RUNNING
    dst = Tracker(store)
    run_id = sweep_ray.copy_run(f"sqlite:///{private}", dst, {"sweep.slug": "t000"})
    run = dst.client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["sweep.slug"] == "t000" and run.data.params["agent.lr"] == "0.001"
    for key in ("train/episode_return", "loss/value"):
        assert history(dst.client, run_id, key) == history(src.client, src.run_id, key)
        assert len(history(dst.client, run_id, key)) == 1500


def test_grid_values_split_like_overrides():
    assert sweep.split_values("1e-3,3e-4") == ["1e-3", "3e-4"]
    assert sweep.split_values("[64,64],[32]") == ["[64,64]", "[32]"]
    assert sweep.parse_grid(["agent.lr=1e-3,3e-4", "agent.network.hidden=[64,64],[32]",
                             "train.gif=true,false"]) == {
        "agent.lr": [0.001, 0.0003], "agent.network.hidden": [[64, 64], [32]],
        "train.gif": [True, False]}


def files_under(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


@pytest.mark.parametrize("argv, words", [
    (["no-such-preset"], ["unknown preset 'no-such-preset'", "valid presets:"]),
    (["digits-vae"], ["not an RL preset"]),
    ([*TINY, "--grid", "agent.lrr=1,2"], ["--grid agent.lrr=1", "unknown key 'agent.lrr'"]),
    ([*TINY, "--grid", "agent.lr=1e-3,-1"], ["--grid agent.lr=-1", "greater than 0"]),
    ([*TINY, "--grid", "agent.lr"], ["--grid 'agent.lr' is not key=v1,v2"]),
    ([*TINY, "--grid", "agent.lr=1e-3,"], ["empty value"]),
    ([*TINY, "--grid", "agent.lr=1,1"], ["repeats a value"]),
    ([*TINY, "--max-concurrent", "0"], ["--max-concurrent 0"]),
    ([*TINY, "--seeds", "x"], ["--seeds 'x'"]),
    ([*TINY, "--trials", "3"], ["--trials N needs --search random"]),
    ([*TINY, "--grid", "agent.lr=1e-3,3e-4", "--search", "random", "--trials", "5"],
     ["only 2 combinations"]),
    (["--resume", "nope"], ["--resume 'nope'", "no sweep there"]),
    (["--resume", "nope", "--grid", "agent.lr=1,2"], ["takes no preset"]),
])
def test_bad_input_exits_2_with_one_line_before_ray_and_writes_nothing(
        argv, words, store, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "require_ray", lambda: None)  # these need no Ray installed

    def no_ray(*a, **k):
        raise AssertionError("Ray started on bad input")

    monkeypatch.setattr(sweep_ray, "_start_ray", no_ray)
    before = files_under(tmp_path)
    db = (tmp_path / "runs" / "mlflow.db").read_bytes()
    assert main(["sweep", *argv, "--tracking-uri", store]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("lab sweep: error:")
    for word in words:
        assert word in err
    assert files_under(tmp_path) == before
    assert (tmp_path / "runs" / "mlflow.db").read_bytes() == db


def test_without_ray_or_optuna_one_line_says_what_to_install(store, tmp_path, monkeypatch,
                                                              capsys):
    before = files_under(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["sweep", *TINY, "--tracking-uri", store]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and 'pip install -e ".[distributed]"' in err
    monkeypatch.setattr(sweep, "require_ray", lambda: None)
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["sweep", *TINY, "--grid", "agent.lr=1e-3,3e-4", "--search", "optuna",
                 "--trials", "2", "--tracking-uri", store]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install optuna" in err
    assert files_under(tmp_path) == before
