"""Training speed of the mnist-* generative presets on each device and precision, in one process.

The GPU check's generative section (benchmarks/gpu_check.sh generative). Each model trains through
the shared trainer as its preset says (compile, channels-last, EMA as set there), with the
precision and the device changed, torch's default thread count (all cores), no test evaluation
or sample grids, for ``--epochs`` epochs over the first EXAMPLES training digits of a leg (all
4,500 by default; fewer keep a slow device's leg short). The figure is the
last epoch's ``time/examples_per_sec``: the first epoch also pays torch.compile and the device's
warm-up, and is printed beside it. One process for every leg, so the interpreter, torch and the
data load once.

    python benchmarks/gpu_generative.py --legs cpu:fp32:640 cuda:fp32 cuda:bf16 cuda:fp16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = ("gan", "vae", "pixelcnn")


def parse_leg(text: str) -> tuple[str, str, int | None]:
    """``device:precision[:examples]`` -> (device, precision, examples or None)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[1] not in ("fp32", "bf16", "fp16"):
        raise argparse.ArgumentTypeError(
            f"leg {text!r}: expected DEVICE:PRECISION[:EXAMPLES], precision fp32, bf16 or fp16")
    try:
        examples = int(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"leg {text!r}: EXAMPLES must be a whole number"
                                         ) from None
    if examples is not None and examples < 1:
        raise argparse.ArgumentTypeError(f"leg {text!r}: EXAMPLES must be at least 1")
    return parts[0], parts[1], examples


def speed(model: str, device: str, precision: str, examples: int | None, epochs: int
          ) -> tuple[int, float, float]:
    """(examples per epoch, first epoch's examples/s, last epoch's examples/s)."""
    from lab.gen_runner import data_batches, load_generative_spec, prepare
    from lab.tracking import ListLogger

    spec = load_generative_spec(f"mnist-{model}", [
        f"train.epochs={epochs}", f"train.precision={precision}", "train.eval_every=0",
        "train.sample_every=0", "train.torch_threads=0"])
    data, trainer = prepare(spec, device, show_progress=False)
    logger = ListLogger()
    trainer.attach(logger=logger)
    n = min(examples or len(data.train), len(data.train))
    train_batches, _ = data_batches(spec, data, trainer.model)
    trainer.fit(train_batches, n)
    rates = [v for _, v in logger.series("time/examples_per_sec")]
    return n, rates[0], rates[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--legs", nargs="+", type=parse_leg,
                        default=[parse_leg(s) for s in ("cpu:fp32:640", "cuda:fp32",
                                                        "cuda:bf16", "cuda:fp16")])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is the warm-up)")
    for model in args.models:
        for device, precision, examples in args.legs:
            start = time.perf_counter()
            n, first, last = speed(model, device, precision, examples, args.epochs)
            print(f"mnist-{model} {device} {precision}: {last:,.0f} examples/s "
                  f"(epoch 1, with the warm-up: {first:,.0f}; {n} examples an epoch, "
                  f"{time.perf_counter() - start:.0f} s in all)", flush=True)


if __name__ == "__main__":
    main()
