"""lab/trainer.py with tiny models: exact resume, the NaN guard, several optimizers, clipping,
EMA, schedules, bf16 autocast on the CPU, and the DDP path under torchrun (2 gloo ranks)."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy_generative import ToyAE, ToyAEConfig, ToyGAN, ToyGANConfig

from generative.data import ImageData, batches
from lab.checkpoint import NonFiniteLossError, load
from lab.spec import SpecError, TrainerSpec
from lab.tracking import ListLogger
from lab.trainer import GenerativeModel, Trainer, lr_factor

SHAPE = (1, 4, 4)


def toy_data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    train, test = torch.rand((n, *SHAPE), generator=g), torch.rand((32, *SHAPE), generator=g)
    return ImageData("toy", train, test, torch.zeros(n, dtype=torch.long),
                     torch.zeros(32, dtype=torch.long), torch.bernoulli(test, generator=g))


def batch_fn(data, cfg, binarize="dynamic"):
    return lambda gen, idx: batches(data, "train", cfg.batch_size, binarize=binarize,
                                    generator=gen, sampler=idx)


def make(kind, cfg, tmp=None, logger=None, init_seed=0):
    torch.manual_seed(init_seed)
    model = ToyAE(ToyAEConfig(), SHAPE) if kind == "ae" else ToyGAN(ToyGANConfig(), SHAPE)
    return Trainer(model, cfg, device="cpu", logger=logger, checkpoint_dir=tmp)


class Interrupt(Exception):
    pass


def interrupted_after(fn, n):
    """A batch function that raises after ``n`` batches have been handed out in all."""
    count = [0]

    def wrapped(gen, idx):
        for batch in fn(gen, idx):
            if count[0] == n:
                raise Interrupt
            count[0] += 1
            yield batch
    return wrapped


@pytest.mark.parametrize("kind, extra", [
    ("ae", dict(ema=0.9, schedule="cosine", warmup_steps=3, grad_clip=1.0)),
    ("gan", dict(schedule="linear")),
])
def test_resume_from_a_mid_epoch_checkpoint_repeats_the_uninterrupted_run(kind, extra, tmp_path):
    data = toy_data()
    cfg = TrainerSpec(epochs=3, batch_size=16, checkpoint_every=4, **extra)  # 6 batches/epoch
    full_log = ListLogger()
    full = make(kind, cfg, tmp_path / "full", full_log)
    full.fit(batch_fn(data, cfg), len(data.train))

    first = make(kind, cfg, tmp_path / "cut")
    with pytest.raises(Interrupt):  # killed in epoch 2 at batch 11; last checkpoint: batch 8
        first.fit(interrupted_after(batch_fn(data, cfg), 11), len(data.train))
    assert load(tmp_path / "cut" / "checkpoint.pt")["step"] == 8
    resumed_log = ListLogger()
    resumed = make(kind, cfg, tmp_path / "cut", resumed_log, init_seed=123)
    resumed.fit(batch_fn(data, cfg), len(data.train), resume=True)

    assert resumed.global_step == full.global_step == 18
    a, b = full.state_dict(), resumed.state_dict()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    if a["ema"] is not None:
        for key, value in a["ema"].items():
            assert torch.equal(value, b["ema"][key]), key
    for name, opt in a["optimizers"].items():
        for pid, state in opt["state"].items():
            other = b["optimizers"][name]["state"][pid]
            assert torch.equal(state["exp_avg_sq"], other["exp_avg_sq"])
    # the epoch the interruption split is logged from all of its batches, as in the full run
    keys = ("train/loss",) if kind == "ae" else ("train/d_loss", "train/g_loss")
    for key in keys:
        assert resumed_log.series(key)[-2:] == full_log.series(key)[-2:]


def test_nan_guard_names_the_loss_keeps_weights_and_the_last_good_checkpoint(tmp_path):
    data = toy_data()
    cfg = TrainerSpec(epochs=2, batch_size=16, checkpoint_every=4)
    torch.manual_seed(0)
    trainer = Trainer(ToyAE(ToyAEConfig(nan_at_step=7), SHAPE), cfg, device="cpu",
                      checkpoint_dir=tmp_path)
    before = None
    with pytest.raises(NonFiniteLossError) as e:
        def record(gen, idx):
            nonlocal before
            for batch in batch_fn(data, cfg)(gen, idx):
                before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
                yield batch
        trainer.fit(record, len(data.train))
    assert (e.value.name, e.value.step) == ("main", 7) and math.isnan(e.value.value)
    assert "non-finite loss main=nan at step 7" in str(e.value)
    for key, value in trainer.model.state_dict().items():  # the NaN step changed nothing
        assert torch.equal(value, before[key])
    ckpt = load(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == 6  # the epoch's end (6 batches) came after step 4's checkpoint
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


class TwoParams(GenerativeModel):
    """loss_b = sum(a * b) backpropagates into a too; then a gets its own loss: a's update must
    see only grad(loss_a)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        self.b = torch.nn.Parameter(torch.tensor([3.0, -4.0]))

    def configure_optimizers(self):
        return {"b": torch.optim.SGD([self.b], lr=0.1), "a": torch.optim.SGD([self.a], lr=0.5)}

    def training_step(self, batch, ctx):
        ctx.step("b", (self.a * self.b).sum())
        ctx.step("a", (self.a ** 2).sum())
        return {}


def test_several_optimizers_each_step_on_their_own_loss_only():
    cfg = TrainerSpec(epochs=1, batch_size=1)
    trainer = Trainer(TwoParams(), cfg, device="cpu")
    trainer.fit(lambda gen, idx: [torch.zeros(1, 1, 1, 1)], 1)
    # b <- b - 0.1 * a;  a <- a - 0.5 * 2a = 0 (not a - 0.5 * (2a + b))
    assert torch.allclose(trainer.model.b, torch.tensor([2.9, -4.2]))
    assert torch.equal(trainer.model.a.detach(), torch.zeros(2))


class Linear1(GenerativeModel):
    def __init__(self, scale=1.0, lr=1.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))
        self.scale, self.lr = scale, lr

    def configure_optimizers(self):
        return {"main": torch.optim.SGD([self.w], lr=self.lr)}

    def training_step(self, batch, ctx):
        ctx.step("main", self.scale * self.w.sum())
        return {"w0": self.w[0].item()}

    def evaluation_step(self, batch):
        return {"w0": self.w[0].expand(len(batch))}


def ones(n_batches):
    return lambda gen, idx: [torch.ones(1, 1, 1, 1)] * n_batches


def test_gradient_clipping_bounds_the_global_norm():
    trainer = Trainer(Linear1(scale=100.0), TrainerSpec(epochs=1, batch_size=1, grad_clip=1.0),
                      device="cpu")
    trainer.fit(ones(1), 1)
    # the gradient is 100 * (1, 1, 1, 1), norm 200, clipped to norm 1: each entry 0.5
    assert torch.allclose(trainer.model.w.detach(), torch.full((4,), -0.5))


def test_ema_weights_follow_the_decay_and_are_the_ones_evaluated():
    trainer = Trainer(Linear1(), TrainerSpec(epochs=1, batch_size=1, ema=0.5), device="cpu")
    trainer.fit(ones(3), 3)
    # w_t = -t; the EMA starts at w_1, then e <- 0.5 e + 0.5 w: -1, -1.5, -2.25
    assert torch.allclose(trainer.model.w.detach(), torch.full((4,), -3.0))
    assert torch.allclose(trainer.eval_model.w.detach(), torch.full((4,), -2.25))
    assert trainer.evaluate([torch.ones(5, 1, 1, 1)]) == {"w0": -2.25}


def test_lr_factor_by_hand():
    assert [lr_factor(s, 10, "constant", warmup=2) for s in (0, 1, 2, 9)] == [0.5, 1, 1, 1]
    assert [lr_factor(s, 10, "linear") for s in (0, 5, 9)] == [1.0, 0.5, pytest.approx(0.1)]
    assert lr_factor(0, 10, "cosine") == 1.0 and lr_factor(5, 10, "cosine") == pytest.approx(0.5)
    cosine = 0.5 * (1 + math.cos(math.pi * 0.2))  # step 4 of 12 after 2 warmup: 2/10 of the way
    assert lr_factor(4, 12, "cosine", warmup=2) == pytest.approx(cosine)


def test_schedule_sets_each_optimizers_lr_per_batch():
    log = ListLogger()
    cfg = TrainerSpec(epochs=2, batch_size=1, schedule="linear", warmup_steps=2)
    trainer = Trainer(Linear1(lr=0.1), cfg, device="cpu", logger=log)
    trainer.fit(ones(5), 5)  # 5 batches per epoch, 10 in all
    # the lr in use after batch s is 0.1 * lr_factor(s + 1) (the scheduler steps after a batch)
    assert log.series("lr/main") == [(1, pytest.approx(0.1 * lr_factor(5, 10, "linear", 2))),
                                     (2, pytest.approx(0.1 * lr_factor(10, 10, "linear", 2)))]
    # w moved by the sum of the lrs of the 10 batches
    expected = -sum(0.1 * lr_factor(s, 10, "linear", 2) for s in range(10))
    assert trainer.model.w[0].item() == pytest.approx(expected)


def test_bf16_autocast_runs_on_the_cpu_and_keeps_fp32_weights():
    data = toy_data()
    cfg = TrainerSpec(epochs=4, batch_size=16, precision="bf16")
    log = ListLogger()
    torch.manual_seed(0)
    trainer = Trainer(ToyAE(ToyAEConfig(lr=3e-2), SHAPE), cfg, device="cpu", logger=log)
    trainer.fit(batch_fn(data, cfg), len(data.train), test_batches=lambda: [data.test_binary])
    assert trainer.model.last_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    losses = [v for _, v in log.series("train/loss")]
    assert losses[-1] < losses[0]
    assert all(math.isfinite(v) for _, v in log.series("test/nll_nats"))


def test_channels_last_keeps_the_numbers_and_stores_conv_weights_nhwc(tmp_path):
    """channels_last is a memory layout only: the same seeds give the same losses (to float
    rounding), the conv weights are NHWC, and a checkpoint reloads into a plain model."""
    from generative.pixelcnn import PixelCNNConfig
    from generative.pixelcnn import build as build_pixelcnn

    g = torch.Generator().manual_seed(0)
    train = torch.rand(64, 1, 8, 8, generator=g)
    data = ImageData("toy", train, train[:16], torch.zeros(64, dtype=torch.long),
                     torch.zeros(16, dtype=torch.long), torch.bernoulli(train[:16], generator=g))
    runs = {}
    for layout in (False, True):
        cfg = TrainerSpec(epochs=2, batch_size=16, channels_last=layout)
        torch.manual_seed(0)
        model = build_pixelcnn(PixelCNNConfig(channels=8, layers=1, output_channels=8,
                                              first_kernel=3), (1, 8, 8))
        log = ListLogger()
        trainer = Trainer(model, cfg, device="cpu", logger=log,
                          checkpoint_dir=tmp_path / str(layout))
        trainer.fit(batch_fn(data, cfg), len(data.train))
        runs[layout] = [v for _, v in log.series("train/loss")]
        conv = model.net.blocks[0].net[3].weight  # 8 -> 8 channels, 3x3: the layouts differ
        assert conv.is_contiguous(memory_format=torch.channels_last) == layout
    assert runs[True] == pytest.approx(runs[False], rel=1e-4)
    state = load(tmp_path / "True" / "checkpoint.pt")
    plain = build_pixelcnn(PixelCNNConfig(channels=8, layers=1, output_channels=8,
                                          first_kernel=3), (1, 8, 8))
    plain.load_state_dict(state["model"])


def test_fp16_off_cuda_is_a_spec_error():
    with pytest.raises(SpecError, match="fp16 needs a CUDA device"):
        Trainer(Linear1(), TrainerSpec(epochs=1, precision="fp16"), device="cpu")


def test_epoch_metrics_samples_and_checkpoint_go_to_their_hooks(tmp_path):
    data = toy_data()
    cfg = TrainerSpec(epochs=2, batch_size=32, sample_every=1, sample_n=9)
    log, grids = ListLogger(), []
    torch.manual_seed(0)
    trainer = Trainer(ToyAE(ToyAEConfig(), SHAPE), cfg, device="cpu", logger=log,
                      checkpoint_dir=tmp_path, on_samples=lambda x, e: grids.append((e, x)))
    result = trainer.fit(batch_fn(data, cfg), len(data.train),
                         test_batches=lambda: batches(data, "test", 10, binarize="dynamic"))
    assert [e for e, _ in grids] == [1, 2] and grids[0][1].shape == (9, *SHAPE)
    assert 0 <= grids[0][1].min() and grids[0][1].max() <= 1
    step, metrics = log.records[-1]
    assert step == 2 and metrics["epoch"] == 2
    for key in ("train/loss", "test/nll_nats", "test/nll_bpd", "time/examples_per_sec", "lr/main"):
        assert key in metrics
    # the test metrics are the means over all 32 test images
    by_hand = trainer.evaluate([data.test_binary])
    assert metrics["test/nll_nats"] == pytest.approx(by_hand["nll_nats"])
    assert result.examples == 2 * 96 and result.examples_per_sec > 0
    assert load(tmp_path / "checkpoint.pt")["epoch"] == 2


def test_compile_targets_compile_in_place_and_keep_state_dict_keys():
    torch.manual_seed(0)
    model = ToyAE(ToyAEConfig(), SHAPE)
    keys = list(model.state_dict())
    Trainer(model, TrainerSpec(epochs=1, compile=True), device="cpu")
    assert model.encoder._compiled_call_impl is not None
    assert model.decoder._compiled_call_impl is not None
    assert list(model.state_dict()) == keys


DDP_SCRIPT = Path(__file__).with_name("ddp_trainer_script.py")


def test_torchrun_two_gloo_ranks_average_gradients_like_one_big_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", str(DDP_SCRIPT), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key in r0["weights"]:
        assert torch.equal(r0["weights"][key], r1["weights"][key])
    # only rank 0 logs and writes the checkpoint
    assert r0["logged"] == 2 and r1["logged"] == 0
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["checkpoint.pt"]
    # one process, SGD on the union of the two ranks' batches, gives the same weights
    reference = torch.load(tmp_path / "reference.pt")
    for key, value in reference.items():
        assert torch.allclose(r0["weights"][key], value, atol=1e-6), key


def test_compile_is_skipped_with_a_warning_where_no_cpp_compiler_exists(monkeypatch):
    import shutil

    from lab.trainer import can_compile

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        assert can_compile(torch.device("cpu")) is False
    assert can_compile(torch.device("cuda")) is True  # nvcc/triton, not a host C++ compiler
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/g++" if name == "g++" else None)
    assert can_compile(torch.device("cpu")) is True
