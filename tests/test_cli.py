import pytest
import yaml
from cli_helpers import assert_refused

import agents
from lab.cli import main
from lab.tracking import Tracker


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Registers the stand-in agent as algo 'fake' and writes a preset for it."""
    monkeypatch.setitem(agents.REGISTRY, "fake", "fake_agent:FakeAgent")
    preset = tmp_path / "fake.yaml"
    preset.write_text(yaml.safe_dump({
        "name": "fake-cartpole", "env": {"id": "CartPole-v1"}, "agent": {"algo": "fake"},
        "train": {"steps": 500, "eval_episodes": 2, "checkpoint_every": 100,
                  "gif_max_frames": 20},
    }))
    return str(preset)



@pytest.mark.parametrize("argv, words", [
    (["train", "no-such-preset"], ["unknown preset 'no-such-preset'", "valid presets:"]),
    (["train", "FAKE", "agent.lrr=1"], ["unknown key 'agent.lrr'", "agent.lr"]),
    (["train", "FAKE", "agent.lr=-1"], ["agent.lr", "greater than 0"]),
    (["train", "FAKE", "agent.lr=fast"], ["agent.lr", "'fast'"]),
    (["train", "FAKE", "agent.algo=dqnn"], ["unknown agent 'dqnn'", "valid agents:", "fake"]),
    (["train", "FAKE", "env.id=CartPole-v9"], ["unknown env id 'CartPole-v9'", "CartPole-v1"]),
    (["train", "FAKE", "train.steps=0"], ["train.steps", "greater than or equal to 1"]),
    (["train", "FAKE", "--seeds", "4-x"], ["--seeds '4-x'"]),
    (["train", "--resume", "abcdef123"], ["unknown run id 'abcdef123'"]),
    (["eval", "abcdef123"], ["unknown run id 'abcdef123'"]),
    (["render", "abcdef123", "--out", "x.avi"], [".gif or .mp4"]),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, words, fake, store, tmp_path,
                                                            capsys):
    argv = [fake if a == "FAKE" else a for a in argv] + ["--tracking-uri", store]
    assert_refused(argv, words, tmp_path, capsys)


def test_train_seeds_make_sibling_runs_with_everything_logged(fake, store, capsys):
    assert main(["train", fake, "--seeds", "0-1", "--group", "g1", "--no-progress",
                 "--tracking-uri", store]) == 0
    tracker = Tracker(store)
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.group = 'g1'")
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert {"agent", "env", "seed", "group", "device", "git_commit", "lab_version"} <= set(tags)
        assert run.data.params["agent.lr"] == "0.1" and run.data.params["train.steps"] == "500"
        steps = [m.step for m in tracker.client.get_metric_history(run.info.run_id,
                                                                   "train/episode_return")]
        assert steps == list(range(50, 501, 50))
        assert "eval/return_mean" in run.data.metrics and "eval/return_std" in run.data.metrics
        artifacts = {f.path for f in tracker.client.list_artifacts(run.info.run_id)}
        assert {"spec.yaml", "checkpoint", "eval.gif"} <= artifacts
    out = capsys.readouterr().out
    assert "lab compare --group g1" in out and "mlflow ui --backend-store-uri" in out

    run_id = runs[0].info.run_id
    assert main(["eval", run_id[:8], "--episodes", "3", "--tracking-uri", store]) == 0
    assert "over 3 episodes" in capsys.readouterr().out
    assert main(["render", run_id, "--out", "ep.gif", "--tracking-uri", store]) == 0
    assert "wrote ep.gif" in capsys.readouterr().out
    assert main(["compare", "--group", "g1", "--tracking-uri", store]) == 0
    assert "fake" in capsys.readouterr().out
    assert main(["compare", "--group", "g1", "--format", "csv", "--no-log",
                 "--tracking-uri", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("agent,env,seeds,final_mean") and lines[1].startswith("fake,")


def test_nan_loss_stops_the_run_marks_it_failed_and_keeps_the_checkpoint(fake, store, capsys,
                                                                          tmp_path):
    from lab.checkpoint import load

    assert main(["train", fake, "agent.nan_at=250", "--no-progress",
                 "--tracking-uri", store]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "loss/fake=nan at step 250" in err and "FAILED" in err
    assert "last good checkpoint (step 200)" in err
    tracker = Tracker(store)
    (run,) = tracker.client.search_runs([tracker.experiment_id])
    assert run.info.status == "FAILED"
    ckpt = load(tmp_path / "runs" / "checkpoints" / run.info.run_id / "checkpoint.pt")
    assert ckpt["step"] == 200 and ckpt["agent"]["num_timesteps"] == 200


def test_list_names_presets_agents_and_env_ids(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "presets" in out and "agents:" in out and "lab/GridWorld-v0" in out


@pytest.mark.parametrize("command", ["list", "train", "eval", "render", "compare", "quickstart"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: lab" in capsys.readouterr().out
