"""Training speed of the generative models: the shared trainer against a minimal loop.

    python benchmarks/generative.py                      # pixelcnn, vae, gan on mnist5k
    python benchmarks/generative.py --models vae --repeats 5 --json speed.json

For each model (the architecture of its ``mnist-*`` preset, or ``digits-*`` with ``--data
digits``) both sides train the same model (same init seed), on the same data, batch size and
binarization, with the optimizers of ``configure_optimizers``, calling the same
``training_step``. The minimal loop is what one writes by hand: shuffle, slice, binarize, and a
``ctx.step`` that is zero_grad + backward + step. The trainer runs with its defaults (fp32,
constant LR, no clipping, no EMA) and nothing at the epoch's end (no evaluation, samples or
checkpoint), so the difference is the trainer's own work: its step context, the per-step
seeded generator, metric sums, the scheduler and progress hooks, the epoch's end. Both clocks
are reported: wall time, and the process's CPU time, which a machine shared with other jobs
disturbs far less (with one torch thread a process waiting for a core is not charged). The
sides alternate (ours, minimal, ours, ...) so load hits both alike; the best of ``--repeats``
is kept. Target: overhead <= 5%.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# ``generative`` package: take the folder off.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

EXAMPLES = {"pixelcnn": 640, "vae": 4500, "gan": 4500}  # per timed epoch on mnist5k


class MinimalContext:
    """The hand-written loop's ``ctx``: zero_grad, backward, step."""

    def __init__(self, optimizers, device):
        self.optimizers, self.device = optimizers, device
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.global_step, self.epoch = 0, 0

    def step(self, name, loss):
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def build(spec, data):
    from lab.gen_runner import build_model

    torch.manual_seed(spec.train.seed)
    return build_model(spec, data.image_shape)


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def minimal_loop(spec, data, binarize: str) -> tuple[int, float, float]:
    from generative.data import batches

    model = build(spec, data)
    model.train()
    ctx = MinimalContext(model.configure_optimizers(), torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    wall, cpu = clocks()
    n = 0
    for batch in batches(data, "train", spec.train.batch_size, binarize=binarize,
                         generator=gen, shuffle=True):
        model.training_step(batch, ctx)
        ctx.global_step += 1
        n += len(batch)
    wall2, cpu2 = clocks()
    return n, wall2 - wall, cpu2 - cpu


def trainer_epoch(spec, data, binarize: str) -> tuple[int, float, float]:
    from generative.data import batches
    from lab.trainer import Trainer

    cfg = spec.train.model_copy(update={"epochs": 1})
    trainer = Trainer(build(spec, data), cfg, device="cpu")
    bs = cfg.batch_size
    wall, cpu = clocks()  # the whole fit: the epoch and the trainer's end-of-epoch work
    result = trainer.fit(lambda g, idx: batches(data, "train", bs, binarize=binarize,
                                                generator=g, sampler=idx), len(data.train))
    wall2, cpu2 = clocks()
    return result.examples, wall2 - wall, cpu2 - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(EXAMPLES), default=list(EXAMPLES))
    parser.add_argument("--data", choices=["mnist", "digits"], default="mnist")
    parser.add_argument("--examples", type=int, default=None,
                        help="train examples per timed epoch (default: pixelcnn 640, others "
                             "the whole train split)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lab.gen_runner import binarize_mode, load_data, load_generative_spec

    rows = []
    for name in args.models:
        spec = load_generative_spec(f"{args.data}-{name}")
        spec = spec.model_copy(update={"train": spec.train.model_copy(update={
            "precision": "fp32", "grad_clip": None, "ema": None, "compile": False,
            "schedule": "constant", "warmup_steps": 0})})
        data = load_data(spec)
        n = args.examples or EXAMPLES[name]
        data = dataclasses.replace(data, train=data.train[:n], train_labels=data.train_labels[:n])
        binarize = binarize_mode(spec, build(spec, data))
        runs = {"ours": [], "minimal": []}
        for _ in range(args.repeats):
            runs["ours"].append(trainer_epoch(spec, data, binarize))
            runs["minimal"].append(minimal_loop(spec, data, binarize))
        row = {"model": name, "data": spec.data.name, "examples": len(data.train),
               "batch_size": spec.train.batch_size, "threads": args.threads, "runs": runs}
        for clock, i in (("wall", 1), ("cpu", 2)):  # examples per second, best of the repeats
            ours = max(run[0] / run[i] for run in runs["ours"])
            minimal = max(run[0] / run[i] for run in runs["minimal"])
            row[clock] = {"ours": ours, "minimal": minimal, "ratio": ours / minimal}
        rows.append(row)
        w, c = row["wall"], row["cpu"]
        print(f"{name}: trainer {w['ours']:,.1f} ex/s, minimal loop {w['minimal']:,.1f} ex/s, "
              f"ratio {w['ratio']:.3f}; per CPU second: trainer {c['ours']:,.1f}, minimal "
              f"{c['minimal']:,.1f}, ratio {c['ratio']:.3f} (overhead "
              f"{100 * (1 - c['ratio']):+.1f}%)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
