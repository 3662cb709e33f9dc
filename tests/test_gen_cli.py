"""`lab train | eval | sample` for generative runs, end to end through the CLI, with the toy
models of tests/toy_generative.py registered in place of the real ones."""

import math

import numpy as np
import pytest
import torch
import toy_generative
import yaml
from cli_helpers import assert_refused
from PIL import Image

import generative.data
from lab import gen_runner
from lab.checkpoint import load
from lab.cli import main
from lab.spec import preset_names, read_preset
from lab.tracking import Tracker


def fake_final_metrics(model, data, *, device, generator, quick):
    """What generative.metrics would do for a likelihood model: the mean test NLL."""
    with torch.no_grad():
        nll = model.evaluation_step(data.test_binary.to(device))["nll_nats"].mean().item()
    return {"test_nll": nll, "quick": float(quick)}


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setattr(gen_runner, "model_registry", lambda: toy_generative.MODELS)
    monkeypatch.setattr(gen_runner, "final_metrics", fake_final_metrics)
    preset = tmp_path / "toy.yaml"
    preset.write_text(yaml.safe_dump({
        "name": "toy-digits", "data": {"name": "digits", "binarize": "dynamic"},
        "model": {"type": "toy_ae", "hidden": 6},
        "train": {"epochs": 2, "batch_size": 100, "sample_every": 1, "sample_n": 16,
                  "checkpoint_every": 4},
    }))
    return str(preset)


def only_run(store):
    tracker = Tracker(store)
    (run,) = tracker.client.search_runs([tracker.experiment_id])
    return tracker.client, run


def artifacts(client, run_id, path=None):
    return sorted(a.path for a in client.list_artifacts(run_id, path))


def test_train_logs_everything_then_sample_and_eval_read_it_back(toy, store, tmp_path, capsys):
    assert main(["train", toy, "--no-progress", "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    assert "toy-digits seed 0: run" in out and "FINISHED: 2 epochs, 2,994 examples" in out
    client, run = only_run(store)
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["kind"] == "generative" and run.data.tags["model"] == "toy_ae"
    assert run.data.params["model.hidden"] == "6" and run.data.params["data.name"] == "digits"
    for key in ("train/loss", "test/nll_nats", "test/nll_bpd", "time/examples_per_sec"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2], key
    final = run.data.metrics["final/test_nll"]
    assert math.isfinite(final) and f"test_nll {final:.4g}" in out
    assert final == pytest.approx(run.data.metrics["test/nll_nats"], rel=1e-5)
    assert artifacts(client, run_id) == ["checkpoint", "samples", "spec.yaml"]
    assert artifacts(client, run_id, "samples") == ["samples/epoch_0001.png",
                                                    "samples/epoch_0002.png"]
    assert artifacts(client, run_id, "checkpoint") == ["checkpoint/checkpoint.pt"]

    # lab sample: a 4x4 grid of 8x8 digits scaled up 4x to 32 px, 2 px grey between
    assert main(["sample", run_id[:8], "--n", "16", "--out", "grid.png",
                 "--tracking-uri", store]) == 0
    assert "wrote grid.png (16 samples of toy-digits, epoch 2, seed 0)" in capsys.readouterr().out
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (4 * 34 + 2, 4 * 34 + 2) and grid.dtype == np.uint8
    assert grid[0, 0] == 128 and grid[2:34, 2:34].std() > 0
    again = tmp_path / "again.png"
    main(["sample", run_id, "--n", "16", "--out", str(again), "--tracking-uri", store])
    assert np.array_equal(np.asarray(Image.open(again)), grid)  # seeded: the same samples

    assert main(["eval", run_id, "--quick", "--tracking-uri", store]) == 0
    printed = capsys.readouterr().out
    assert f"run {run_id} (toy-digits, toy_ae on digits, epoch 2)" in printed
    assert f"{final:.4f}" in printed and "1.0000" in printed  # quick was passed through



@pytest.mark.parametrize("argv, words", [
    (["train", "TOY", "model.hiden=3"], ["unknown key 'model.hiden'", "model.hidden"]),
    (["train", "TOY", "model.type=vea"], ["unknown model 'vea'", "valid models: toy_ae, toy_gan"]),
    (["train", "TOY", "train.epochs=0"], ["train.epochs", "greater than or equal to 1"]),
    (["train", "TOY", "data.name=mnist"], ["dataset 'mnist'", "data.root",
                                           "train-images-idx3-ubyte"]),
    (["train", "TOY", "data.name=mnist", "data.root=/nowhere"], ["/nowhere",
                                                                 "t10k-labels-idx1-ubyte"]),
    (["train", "TOY", "train.precision=fp16"], ["fp16 needs a CUDA device"]),
    (["sample", "abcdef123"], ["unknown run id 'abcdef123'"]),
    (["sample", "abcdef123", "--n", "0"], ["--n 0: must be at least 1"]),
    (["sample", "abcdef123", "--out", "grid.jpg"], ["must end in .png"]),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, words, toy, store, tmp_path,
                                                            capsys):
    argv = [toy if a == "TOY" else a for a in argv] + ["--tracking-uri", store]
    assert_refused(argv, words, tmp_path, capsys)


def test_sample_of_an_rl_run_is_refused(toy, store, capsys):
    tracker = Tracker(store)
    run_id = tracker.start({}, {"agent": "dqn"})
    tracker.finish()
    assert main(["sample", run_id, "--tracking-uri", store]) == 2
    assert "is not a generative run" in capsys.readouterr().err


def test_nan_loss_marks_the_run_failed_and_keeps_the_last_checkpoint(toy, store, capsys):
    assert main(["train", toy, "model.nan_at_step=6", "--no-progress",
                 "--tracking-uri", store]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "non-finite loss main=nan at step 6" in err and "run marked FAILED" in err
    _, run = only_run(store)
    assert run.info.status == "FAILED"
    ckpt = load(run.data.tags["lab.checkpoint_dir"] + "/checkpoint.pt")
    assert ckpt["step"] == 4  # checkpoint_every=4: the last one before the NaN at step 6


def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(toy, store, tmp_path,
                                                                         monkeypatch, capsys):
    assert main(["train", toy, "--no-progress", "--tracking-uri", store]) == 0
    client, full = only_run(store)
    full_ckpt = load(full.data.tags["lab.checkpoint_dir"] + "/checkpoint.pt")
    client.delete_run(full.info.run_id)

    real_batches, handed = generative.data.batches, [0]

    def dying_batches(*args, **kwargs):  # the process is "killed" at batch 22 of 30
        for batch in real_batches(*args, **kwargs):
            if kwargs.get("generator") is not None and handed[0] == 22:
                raise KeyboardInterrupt
            handed[0] += kwargs.get("generator") is not None
            yield batch

    monkeypatch.setattr(generative.data, "batches", dying_batches)
    with pytest.raises(KeyboardInterrupt):
        main(["train", toy, "--no-progress", "--tracking-uri", store])
    monkeypatch.setattr(generative.data, "batches", real_batches)
    _, cut = only_run(store)
    assert cut.info.status == "KILLED"
    assert main(["train", "--resume", cut.info.run_id, "--no-progress",
                 "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    assert f"resumed run {cut.info.run_id} from step 20 (epoch 1 done)" in out
    _, done = only_run(store)
    assert done.info.status == "FINISHED"
    resumed = load(done.data.tags["lab.checkpoint_dir"] + "/checkpoint.pt")
    for key, value in full_ckpt["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    # the epoch metrics are logged once per epoch, not again for the replayed batches
    steps = [m.step for m in client.get_metric_history(done.info.run_id, "train/loss")]
    assert steps == [1, 2]


def test_lab_list_shows_the_generative_presets(capsys):
    names = [n for n in preset_names() if "model" in read_preset(n)]
    assert {"digits-pixelcnn", "digits-vae", "digits-gan", "mnist-pixelcnn", "mnist-vae",
            "mnist-gan", "mnist-cgan"} <= set(names)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in names:
        assert name in out


def test_generative_presets_validate_against_the_real_models():
    from generative import MODELS

    for name in ("digits-pixelcnn", "digits-vae", "digits-gan", "mnist-pixelcnn", "mnist-vae",
                 "mnist-gan", "mnist-cgan"):
        spec = gen_runner.load_generative_spec(name)
        assert spec.model.type in MODELS and spec.name == name
        assert spec.data.name == name.split("-")[0].replace("mnist", "mnist5k")


def test_a_class_conditional_gan_trains_through_the_cli(store, capsys):
    """The real GAN with model.classes: labelled batches through the trainer (EMA, test
    evaluation, sample grids, the final metrics)."""
    assert main(["train", "digits-gan", "model.classes=10", "train.epochs=2",
                 "train.final_eval=quick", "--no-progress", "--tracking-uri", store]) == 0
    assert "FINISHED: 2 epochs" in capsys.readouterr().out
    client, run = only_run(store)
    assert run.data.params["model.classes"] == "10"
    assert 0 < run.data.metrics["test/d_real_prob"] < 1
    assert math.isfinite(run.data.metrics["final/fid"])


def test_a_self_conditioned_gan_fits_its_clusters_once_and_loads_them_after(store, tmp_path,
                                                                           monkeypatch, capsys):
    """k-means runs before training; eval, sample and --resume take the clusters from the
    checkpoint instead of fitting them again."""
    import generative.gan

    assert main(["train", "digits-gan", "model.clusters=4", "train.epochs=1",
                 "train.final_eval=none", "--no-progress", "--tracking-uri", store]) == 0
    client, run = only_run(store)
    ckpt = run.data.tags["lab.checkpoint_dir"] + "/checkpoint.pt"
    centroids = load(ckpt)["model"]["centroids"]
    assert centroids.shape == (4, 64) and centroids.abs().sum() > 0

    def refit(*args, **kwargs):
        raise AssertionError("k-means ran again")

    monkeypatch.setattr(generative.gan, "kmeans", refit)
    _, _, trainer = gen_runner.load_run(client, run)
    assert torch.equal(trainer.model.centroids, centroids)
    assert main(["sample", run.info.run_id, "--n", "4", "--out", str(tmp_path / "s.png"),
                 "--tracking-uri", store]) == 0
    assert main(["train", "--resume", run.info.run_id, "--no-progress",
                 "--tracking-uri", store]) == 0
    assert "resumed run" in capsys.readouterr().out
    assert torch.equal(load(ckpt)["model"]["centroids"], centroids)


def test_class_or_cluster_counts_the_data_cannot_hold_are_refused(store, tmp_path, capsys):
    assert_refused(["train", "digits-gan", "model.classes=7", "--tracking-uri", store],
                   ["model.classes=7", "has 10 classes", "model.classes=10"], tmp_path, capsys)
    assert_refused(["train", "digits-gan", "model.clusters=5000", "--tracking-uri", store],
                   ["model.clusters=5000", "1497 training images", "between 1 and 1497"],
                   tmp_path, capsys)
