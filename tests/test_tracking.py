from pathlib import Path

from lab.tracking import MlflowLogger, Tracker, find_run


def test_run_params_tags_metrics_and_artifacts(store, tmp_path):
    tracker = Tracker(store, "exp")
    run_id = tracker.start({"agent.lr": 0.001, "env.id": "CartPole-v1"},
                           {"agent": "dqn", "seed": "0"}, run_name="r")
    for step in range(0, 2500, 10):
        tracker.logger.log({"train/episode_return": step / 10, "loss/td": 1.0}, step=step)
    note = tmp_path / "note.txt"
    note.write_text("hi")
    tracker.log_artifact(note, "extra")
    tracker.finish()

    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"agent.lr": "0.001", "env.id": "CartPole-v1"}
    assert run.data.tags["agent"] == "dqn"
    history = tracker.client.get_metric_history(run_id, "train/episode_return")
    assert [m.step for m in history] == list(range(0, 2500, 10))
    # artifacts live under runs/artifacts/<experiment> next to the store
    location = Path(tracker.client.get_experiment(tracker.experiment_id).artifact_location
                    .removeprefix("file://"))
    assert location == (tmp_path / "runs" / "artifacts" / "exp").resolve()
    assert [f.path for f in tracker.client.list_artifacts(run_id, "extra")] == ["extra/note.txt"]


def test_logger_batches_its_writes():
    calls = []

    class Client:
        def log_batch(self, run_id, metrics, synchronous):
            calls.append(len(metrics))

    logger = MlflowLogger(Client(), "r", flush_every_s=1e9)
    for step in range(2500):
        logger.log({"a": 1.0, "b": 2.0}, step)
    logger.flush()
    assert sum(calls) == 5000 and max(calls) <= 1000 and len(calls) == 5


def test_resume_skips_steps_already_stored(store):
    tracker = Tracker(store, "exp")
    run_id = tracker.start({}, {})
    for step in range(0, 100, 10):
        tracker.logger.log({"m": 1.0}, step)
    tracker.logger.flush()  # the process dies here, after step 90 reached the store

    again = Tracker(store, "exp")
    again.resume(run_id)  # the checkpoint was at step 50: steps 60-90 get replayed
    for step in range(50, 150, 10):
        again.logger.log({"m": 2.0, "new": 3.0}, step)
    again.finish()
    steps = [m.step for m in again.client.get_metric_history(run_id, "m")]
    assert sorted(steps) == list(range(0, 150, 10))  # no duplicated step
    assert [m.step for m in again.client.get_metric_history(run_id, "new")] == list(
        range(50, 150, 10))


def test_find_run_by_prefix(store):
    tracker = Tracker(store, "exp")
    run_id = tracker.start({}, {})
    assert find_run(tracker.client, run_id).info.run_id == run_id
    assert find_run(tracker.client, run_id[:8]).info.run_id == run_id
    assert find_run(tracker.client, "nope") is None
