"""The one trainer for torch modules outside RL: device, precision, optimizers, checkpoints, logs.

A model provides ``configure_optimizers``, ``training_step(batch, ctx)``, ``evaluation_step`` and
``sample`` (see ``GenerativeModel``); the trainer owns the loop. Inside ``training_step`` the
model calls ``ctx.step(name, loss)`` once per optimizer update it wants (a GAN: "d" then "g"),
and ``ctx.step`` does the backward, gradient clipping, the optimizer step and the NaN guard.

What the trainer adds around the model, each optional from ``TrainerSpec``:
- device ``auto`` (cuda, then mps, then cpu); ``torch.autocast`` in bf16 or fp16 (fp16 with a
  GradScaler, CUDA only); ``torch.compile`` of each of the model's ``compile_targets``;
  channels-last (NHWC) weights, which with bf16 put convolutions on oneDNN's fast path;
- an EMA copy of the weights (``torch.optim.swa_utils.AveragedModel``) that evaluates and
  samples; learning-rate schedules (warmup, then constant, linear or cosine) per optimizer;
- atomic checkpoints at each epoch's end (and every N batches) holding everything needed to
  resume exactly: weights, optimizers, schedulers, scaler, EMA, RNG, counters;
- per-epoch metrics through a ``Logger``, ``time/examples_per_sec``, sample grids, a progress bar.

Randomness is a pure function of (seed, rank, epoch, step): the data order and dynamic
binarization of an epoch come from a generator seeded by (seed, rank, epoch), the noise of a step
from one seeded by (seed, rank, step). So a run resumed from any checkpoint, even one written in
the middle of an epoch, repeats the uninterrupted run exactly.

Under ``torchrun`` (WORLD_SIZE > 1) each rank trains on its DistributedSampler shard and
gradients are averaged across ranks right before every optimizer step: one all_reduce of the
flattened gradients (and the loss, so a NaN on any rank stops every rank). This is the arithmetic
of DistributedDataParallel; the wrapper itself does not fit here because the backward happens
inside ``training_step``, possibly twice per batch (a GAN), and DDP's reducer syncs only one
backward per wrapped forward. Only rank 0 logs, samples and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lab.checkpoint import (
    CHECKPOINT_NAME,
    NonFiniteLossError,
    load,
    rng_state,
    save_atomic,
    set_rng_state,
)
from lab.spec import SpecError, TrainerSpec
from lab.tracking import Logger

# train_batches(generator, indices) -> the epoch's batches of train[indices], in that order; a
# batch is a tensor of images or a tuple (images, labels) for a class-conditional model
Batch = torch.Tensor | tuple[torch.Tensor, ...]
BatchFn = Callable[[torch.Generator, Sequence[int]], Iterable[Batch]]


class GenerativeModel(nn.Module):
    """What the trainer expects of a model (models may subclass this or just match it)."""

    compile_targets: tuple[str, ...] = ()  # submodules to torch.compile, e.g. ("net",)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError  # {"main": ...} or {"d": ..., "g": ...}

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        raise NotImplementedError  # calls ctx.step(name, loss); returns metrics as floats

    def evaluation_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError  # per-example values of shape (B,)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError  # (n, C, H, W) in [0, 1]


def to_device(batch: Batch, device: torch.device) -> Batch:
    """A batch on ``device``: a tensor, or a tuple of tensors (images first, then for example
    the labels of a class-conditional model)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return tuple(t.to(device, non_blocking=True) for t in batch)


def batch_length(batch: Batch) -> int:
    """How many examples a batch (a tensor or a tuple of tensors) holds."""
    return len(batch if isinstance(batch, torch.Tensor) else batch[0])


def can_compile(device: torch.device) -> bool:
    """Whether ``torch.compile`` can build kernels for ``device``: inductor compiles C++ for the
    CPU, so a machine without a C++ compiler trains eagerly (one warning) instead of failing
    at the first step."""
    if device.type != "cpu" or any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        return True
    warnings.warn("train.compile: no C++ compiler (c++, g++ or clang++) on PATH for "
                  "torch.compile on the CPU; training without it", stacklevel=3)
    return False


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: cuda (this rank's GPU under torchrun), then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the torchrun process group if WORLD_SIZE > 1 (gloo on cpu, nccl on cuda).
    Returns (rank, world_size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return 0, 1
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from (seed, rank, stream, counter...): independent streams that any process
    can recompute. SplitMix64 over the parts (a couple of microseconds: it runs every batch)."""
    mask = (1 << 64) - 1
    z = 0
    for part in parts:
        z = (z ^ (part & mask)) + 0x9E3779B97F4A7C15 & mask
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & mask
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & mask
        z ^= z >> 31
    return z >> 1


def lr_factor(step: int, total: int, kind: str, warmup: int = 0) -> float:
    """The multiplier of the base learning rate at batch ``step`` (0-based) of ``total``:
    a linear warmup from 1/warmup to 1, then constant, linear decay or a cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class StepContext:
    """What ``training_step`` sees: ``step(name, loss)`` and the counters, device, generator."""

    def __init__(self, trainer: Trainer):
        self._t = trainer
        self.global_step = 0
        self.epoch = 0
        self.device = trainer.device
        self.generator = torch.Generator(device=trainer.device)

    def step(self, name: str, loss: torch.Tensor) -> None:
        """Backward ``loss`` (scaled under fp16), average the gradients across ranks, unscale,
        clip that optimizer's gradients to ``grad_clip``, step it, and stop on a non-finite
        loss before it reaches the weights. Gradients of that optimizer's parameters are
        cleared before the backward, so an earlier loss (the GAN's G loss through D) never
        leaks into this update."""
        t = self._t
        optimizer, params = t.optimizers[name], t._params[name]
        optimizer.zero_grad(set_to_none=True)
        with t._no_autocast():
            (t.scaler.scale(loss) if t.scaler else loss).backward()
        value = t._average_gradients(params, loss)
        if not math.isfinite(value):
            raise NonFiniteLossError(name, value, self.global_step)
        if t.scaler is not None:
            if t.cfg.grad_clip:
                t.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, t.cfg.grad_clip)
            t.scaler.step(optimizer)
        else:
            if t.cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, t.cfg.grad_clip)
            optimizer.step()


@dataclass
class FitResult:
    epochs: int
    global_step: int
    examples: int      # examples trained on in this call, all ranks together
    train_s: float     # seconds inside the training batches only (no eval, samples, saves)
    metrics: dict[str, float]  # the last epoch's logged metrics

    @property
    def examples_per_sec(self) -> float:
        return self.examples / self.train_s if self.train_s > 0 else float("nan")


class Trainer:
    """Trains ``model`` (already built and seeded) by ``cfg``. ``fit`` runs the epochs."""

    def __init__(self, model: nn.Module, cfg: TrainerSpec, *, device: str = "auto",
                 logger: Logger | None = None, checkpoint_dir: str | Path | None = None,
                 on_samples: Callable[[torch.Tensor, int], None] | None = None,
                 show_progress: bool = False, title: str = "train"):
        self.cfg = cfg
        self.device = resolve_device(device)
        self.rank, self.world_size = init_distributed(self.device)
        self.is_main = self.rank == 0
        self._check_precision()
        self.model = model.to(self.device)
        if cfg.channels_last:  # NHWC weights make every conv output NHWC: no input change
            self.model.to(memory_format=torch.channels_last)
        self.optimizers = model.configure_optimizers()
        self._params = {name: [p for g in opt.param_groups for p in g["params"]]
                        for name, opt in self.optimizers.items()}
        self.schedulers = {}
        self._total_steps = 1  # set by fit: the schedules' length in batches
        if cfg.schedule != "constant" or cfg.warmup_steps:
            self.schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, self._lr_lambda)
                               for name, opt in self.optimizers.items()}
        self.scaler = (torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16"
                       else None)
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema),
                                  use_buffers=True) if cfg.ema else None)
        if self.world_size > 1:
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0)
        if cfg.compile and can_compile(self.device):
            for name in getattr(model, "compile_targets", ()) or ("",):
                model.get_submodule(name).compile()
        self.attach(logger=logger, checkpoint_dir=checkpoint_dir, on_samples=on_samples)
        self.show_progress = show_progress and self.is_main
        self.title = title
        self.ctx = StepContext(self)
        self.epoch = 0            # epochs completed
        self.global_step = 0      # batches completed
        self._batch_in_epoch = 0  # batches of the current epoch done (a mid-epoch checkpoint)
        self._sums: dict[str, float] = {}

    # ---- public ---------------------------------------------------------------------------

    def attach(self, *, logger: Logger | None = None, checkpoint_dir: str | Path | None = None,
               on_samples: Callable[[torch.Tensor, int], None] | None = None) -> None:
        """Where the epoch metrics, checkpoints and sample grids go (only rank 0 logs and
        samples; every rank knows the checkpoint, to resume from it)."""
        self.logger = logger if self.is_main else None
        self.checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
        self.on_samples = on_samples if self.is_main else None

    @property
    def eval_model(self) -> nn.Module:
        """The EMA weights when kept, else the model: what evaluates and samples."""
        return self.ema.module if self.ema is not None else self.model

    def fit(self, train_batches: BatchFn, num_train: int,
            test_batches: Callable[[], Iterable[Batch]] | None = None,
            resume: bool = False) -> FitResult:
        """Train until ``cfg.epochs`` are done (from the checkpoint when ``resume``)."""
        cfg = self.cfg
        if resume and self.checkpoint_path is not None and self.checkpoint_path.is_file():
            self.load_checkpoint(self.checkpoint_path)
        per_rank = math.ceil(num_train / self.world_size)
        steps_per_epoch = math.ceil(per_rank / cfg.batch_size)
        self._total_steps = cfg.epochs * steps_per_epoch
        examples, train_s, metrics = 0, 0.0, {}
        with _Progress(self._total_steps, self.title, self.show_progress) as bar:
            bar.update(self.global_step, self.epoch, {})
            while self.epoch < cfg.epochs:
                t0 = time.perf_counter()
                n = self._train_epoch(train_batches, num_train, bar)
                epoch_s = time.perf_counter() - t0
                examples += n * self.world_size
                train_s += epoch_s
                metrics = self._end_epoch(n, epoch_s, test_batches)
        return FitResult(self.epoch, self.global_step, examples, train_s, metrics)

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Means over all examples of ``evaluation_step``'s per-example values (EMA weights)."""
        model = self.eval_model
        was_training = model.training
        model.eval()
        sums: dict[str, float] = {}
        count = 0
        for batch in batches:
            with self._autocast():
                values = model.evaluation_step(to_device(batch, self.device))
            for key, v in values.items():
                sums[key] = sums.get(key, 0.0) + float(v.float().sum())
            count += batch_length(batch)
        model.train(was_training)
        return {key: total / count for key, total in sums.items()}

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        model = self.eval_model
        was_training = model.training
        model.eval()
        g = torch.Generator(device=self.device).manual_seed(self.cfg.seed if seed is None else seed)
        with self._autocast():
            images = model.sample(n, generator=g)
        model.train(was_training)
        return images.float().clamp(0, 1).cpu()

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng_state(),
            "epoch": self.epoch, "step": self.global_step,
            "batch_in_epoch": self._batch_in_epoch, "epoch_sums": dict(self._sums),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        self.epoch, self.global_step = int(state["epoch"]), int(state["step"])
        self._batch_in_epoch = int(state["batch_in_epoch"])
        self._sums = dict(state["epoch_sums"])

    def load_checkpoint(self, path: str | Path) -> None:
        # on the CPU first: the RNG states must stay CPU tensors; load_state_dict moves the rest
        self.load_state_dict(load(path, map_location="cpu"))

    def save_checkpoint(self) -> Path | None:
        """Rank 0 writes the checkpoint atomically (after flushing the logger, so the store is
        never behind the checkpoint); other ranks wait for it."""
        path = None
        if self.is_main and self.checkpoint_path is not None:
            if self.logger is not None and hasattr(self.logger, "flush"):
                self.logger.flush()
            path = save_atomic(self.state_dict(), self.checkpoint_path)
        if self.world_size > 1:
            dist.barrier()
        return path

    # ---- the loop ---------------------------------------------------------------------------

    def _train_epoch(self, train_batches: BatchFn, num_train: int, bar: _Progress) -> int:
        """The rest of the current epoch; returns the number of examples this rank saw."""
        cfg, ctx = self.cfg, self.ctx
        data_gen = torch.Generator().manual_seed(derived_seed(cfg.seed, self.rank, 0, self.epoch))
        indices = self._epoch_indices(num_train, data_gen)
        batches = iter(train_batches(data_gen, indices))
        for _ in range(self._batch_in_epoch):  # resumed mid-epoch: replay the draws, skip work
            next(batches)
        self.model.train()
        ctx.epoch, seen = self.epoch, 0
        every = cfg.checkpoint_every
        for batch in batches:
            ctx.global_step = self.global_step
            ctx.generator.manual_seed(derived_seed(cfg.seed, self.rank, 1, self.global_step))
            with self._autocast():
                metrics = self.model.training_step(to_device(batch, self.device), ctx)
            if self.scaler is not None:
                self.scaler.update()
            for scheduler in self.schedulers.values():
                scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            for key, value in metrics.items():
                self._sums[key] = self._sums.get(key, 0.0) + float(value)
            self.global_step += 1
            self._batch_in_epoch += 1
            seen += batch_length(batch)
            bar.update(self.global_step, self.epoch, metrics)
            if every and self.global_step % every == 0:
                self.save_checkpoint()
        return seen

    def _epoch_indices(self, num_train: int, data_gen: torch.Generator) -> Sequence[int]:
        if self.world_size > 1:
            from torch.utils.data import DistributedSampler

            sampler = DistributedSampler(range(num_train), num_replicas=self.world_size,
                                         rank=self.rank, shuffle=True, seed=self.cfg.seed)
            sampler.set_epoch(self.epoch)
            return list(sampler)
        return torch.randperm(num_train, generator=data_gen).tolist()

    def _end_epoch(self, examples: int, epoch_s: float,
                   test_batches: Callable[[], Iterable[Batch]] | None) -> dict[str, float]:
        cfg = self.cfg
        steps = max(self._batch_in_epoch, 1)
        metrics = {f"train/{k}": v / steps for k, v in self._sums.items()}
        self.epoch += 1
        self._batch_in_epoch, self._sums = 0, {}
        last = self.epoch == cfg.epochs
        if examples:  # (none when resumed from a checkpoint written at the epoch's last batch)
            metrics["time/examples_per_sec"] = examples * self.world_size / epoch_s
            metrics["time/epoch_s"] = epoch_s
        metrics["epoch"] = self.epoch
        for name, opt in self.optimizers.items():
            metrics[f"lr/{name}"] = opt.param_groups[0]["lr"]
        if self.is_main:
            if test_batches is not None and (last or (cfg.eval_every and
                                                      self.epoch % cfg.eval_every == 0)):
                metrics.update({f"test/{k}": v for k, v in self.evaluate(test_batches()).items()})
            if self.on_samples is not None and (last or (cfg.sample_every and
                                                         self.epoch % cfg.sample_every == 0)):
                self.on_samples(self.sample(cfg.sample_n), self.epoch)
            if self.logger is not None:
                self.logger.log(metrics, step=self.epoch)
        self.save_checkpoint()
        return metrics

    # ---- helpers ----------------------------------------------------------------------------

    def _lr_lambda(self, step: int) -> float:
        return lr_factor(step, self._total_steps, self.cfg.schedule, self.cfg.warmup_steps)

    def _check_precision(self) -> None:
        p, kind = self.cfg.precision, self.device.type
        if p == "fp16" and kind != "cuda":
            raise SpecError(f"train.precision=fp16 needs a CUDA device (this run is on {kind}; "
                            "use bf16 or fp32)")

    def _autocast(self):
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _no_autocast(self):
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, enabled=False)

    def _average_gradients(self, params: list[torch.nn.Parameter], loss: torch.Tensor) -> float:
        """One all_reduce of [grads..., loss] averaged over ranks; returns the mean loss."""
        if self.world_size == 1:
            return float(loss.detach())
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params]
                         + [loss.detach().float().reshape(1).to(params[0].grad.dtype)])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n
        return float(flat[-1])


class _Progress:
    """A rich progress bar: batches, examples/s, epoch, the latest step metrics, ETA."""

    def __init__(self, total: int, title: str, enabled: bool):
        self.total, self.title, self.enabled = total, title, enabled
        self._bar = None
        self._last = 0.0

    def __enter__(self):
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("epoch {task.fields[epoch]}"),
                                 TextColumn("{task.fields[metrics]}"), TimeRemainingColumn())
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=self.total, epoch=0, metrics="")
        return self

    def update(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        now = time.monotonic()
        if self._bar is None or (now - self._last < 0.1 and step < self.total):
            return
        self._last = now
        text = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self._bar.update(self._task, completed=step, epoch=epoch + 1, metrics=text)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False
