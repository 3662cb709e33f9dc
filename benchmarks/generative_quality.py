"""Sample quality and likelihoods of the generative models on mnist5k after a fixed budget.

    python benchmarks/generative_quality.py                     # the three mnist-* presets
    python benchmarks/generative_quality.py --models vae gan --json quality.json
    python benchmarks/generative_quality.py --smoke             # digits-* presets, 2 epochs

Each model trains through the shared trainer exactly as ``lab train mnist-<model>`` would (the
preset's architecture, epochs, batch size, schedule and threads; ``--set key=value`` overrides
as on the CLI), without mlflow, then ``generative.metrics.evaluate_model`` gives the numbers
of issue 4's benchmark. The budget is the preset's epochs: the report prints the epochs and the
training minutes next to each number. Targets:

- PixelCNN: exact test NLL <= 88 nats per image on the fixed binarization of the 500 test
  digits (the PixelCNN paper: 81.3 on full binarized MNIST);
- VAE: -IWAE_k with k = 1000 <= 100 nats on the same digits;
- GAN: Inception Score (the lab's classifier) >= 8.5, and a FID below the VAE's samples
  (both FIDs against the training digits, beside the real-vs-real floor). ``cgan`` is the
  class-conditional GAN (mnist-cgan), judged the same way beside the unconditional one.

Sample grids go to ``--out`` (default runs/quality/<model>.png), for the README.
``--smoke`` runs the ``digits-*`` presets for 2 epochs with the quick evaluation: it checks
the pipeline, its numbers are not the benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

# Run as a script, this folder comes first on sys.path and benchmarks/generative.py would
# shadow the ``generative`` package: take the folder off.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

TARGETS = {"pixelcnn": "test_nll <= 88", "vae": "test_nll <= 100 (k = 1000)",
           "gan": "inception_score >= 8.5 and fid < the VAE's fid"}
TARGETS["cgan"] = TARGETS["gan"]  # the class-conditional GAN, judged as the GAN
# model -> (preset, --smoke preset, the smoke run's extra overrides)
PRESETS = {"vae": ("mnist-vae", "digits-vae", []),
           "pixelcnn": ("mnist-pixelcnn", "digits-pixelcnn", []),
           "gan": ("mnist-gan", "digits-gan", ["model.clusters=10"]),
           "cgan": ("mnist-cgan", "digits-gan", ["model.classes=10"])}


def train_and_evaluate(preset: str, overrides: list[str], quick: bool, device: str,
                       grid_path: Path, truncations: list[float] = ()) -> dict:
    from generative.metrics import evaluate_model
    from lab.gen_runner import data_batches, load_generative_spec, prepare
    from lab.images import save_grid

    spec = load_generative_spec(preset, overrides)
    data, trainer = prepare(spec, device, show_progress=sys.stderr.isatty())
    train_batches, test_batches = data_batches(spec, data, trainer.model)
    cpu0 = time.process_time()  # all threads' CPU time: the budget is CPU, the wall is shared
    fit = trainer.fit(train_batches, len(data.train), test_batches)
    train_cpu_s = time.process_time() - cpu0
    start = time.perf_counter()
    gen = torch.Generator(device=trainer.device).manual_seed(spec.train.seed)
    final = evaluate_model(trainer.eval_model, data, device=trainer.device, generator=gen,
                           quick=quick, cache_dir=Path("runs") / "cache")
    eval_s = time.perf_counter() - start
    n = 16 if spec.model.type == "pixelcnn" else 64  # pixel-by-pixel sampling is slow
    save_grid(trainer.sample(n), grid_path)
    truncated = {}  # the same GAN's samples with z truncated (a sampling setting only)
    if spec.model.type == "gan" and truncations:
        cfg = trainer.eval_model.cfg
        preset_truncation = cfg.truncation
        for t in truncations:
            cfg.truncation = t
            gen = torch.Generator(device=trainer.device).manual_seed(spec.train.seed)
            truncated[str(t)] = evaluate_model(trainer.eval_model, data, device=trainer.device,
                                               generator=gen, quick=quick,
                                               cache_dir=Path("runs") / "cache")
            save_grid(trainer.sample(n), grid_path.with_name(f"{grid_path.stem}-t{t}.png"))
            print(f"{preset}: truncation {t}: {truncated[str(t)]}", flush=True)
        cfg.truncation = preset_truncation
    return {"preset": preset, "overrides": overrides, "model": spec.model.type,
            "data": spec.data.name, "epochs": fit.epochs, "train_min": fit.train_s / 60,
            "train_cpu_min": train_cpu_s / 60,
            "eval_min": eval_s / 60, "examples_per_sec": fit.examples_per_sec,
            "torch_threads": torch.get_num_threads(), "device": str(trainer.device),
            "final": final, "truncated": truncated, "grid": str(grid_path)}


def verdicts(results: dict[str, dict], vae_fid: float | None = None
             ) -> dict[str, bool | None]:
    """Each model's target met (True/False), or None when it cannot be judged here (not
    mnist5k, or the GAN's FID half without the VAE in this run nor ``vae_fid``)."""
    out: dict[str, bool | None] = {}
    results = {k: r for k, r in results.items() if r["data"] == "mnist5k"}
    if "pixelcnn" in results:
        out["pixelcnn"] = results["pixelcnn"]["final"]["test_nll"] <= 88
    if "vae" in results:
        final = results["vae"]["final"]
        out["vae"] = final["test_nll"] <= 100 if final["iwae_k"] == 1000 else None
    vae_fid = results.get("vae", {}).get("final", {}).get("fid", vae_fid)
    for name in ("gan", "cgan"):
        if name not in results:
            continue
        final = results[name]["final"]
        good_is = final["inception_score"] >= 8.5
        if vae_fid is None:  # the FID half needs the VAE in the same run
            out[name] = None if good_is else False
        else:
            out[name] = good_is and final["fid"] < vae_fid
    return out


def report(results: dict[str, dict], vae_fid: float | None = None) -> str:
    lines = ["| model | data | epochs | train min (CPU min) | numbers | target | met |",
             "|---|---|---|---|---|---|---|"]
    met = verdicts(results, vae_fid)
    keys = ("test_nll", "test_bpd", "test_elbo_nll", "fid", "fid_real_floor", "kid",
            "inception_score", "inception_score_real", "inception_class_entropy",
            "inception_doubt_entropy", "classifier_test_accuracy")
    for name, r in results.items():
        nums = ", ".join(f"{k} {r['final'][k]:.4g}" for k in keys if k in r["final"])
        verdict = {True: "yes", False: "**no**", None: "n/a"}[met.get(name, None)]
        lines.append(f"| {name} | {r['data']} | {r['epochs']} | {r['train_min']:.1f} "
                     f"({r.get('train_cpu_min', float('nan')):.1f}) | {nums} "
                     f"| {TARGETS[name]} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["pixelcnn", "vae", "gan"],
                        choices=list(PRESETS))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="preset overrides for every model, e.g. train.epochs=5")
    parser.add_argument("--smoke", action="store_true",
                        help="digits-* presets, 2 epochs, quick evaluation")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs") / "quality")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--truncations", nargs="*", type=float, default=[],
                        help="also evaluate the trained GAN's samples with z truncated to "
                             "|z_i| <= t for each t (BigGAN's truncation trick)")
    parser.add_argument("--vae-fid", type=float, default=None,
                        help="the VAE's FID from an earlier run, for the GAN's verdict alone")
    args = parser.parse_args(argv)
    overrides = (["train.epochs=2"] if args.smoke else []) + list(args.set)
    results = {}
    order = [m for m in PRESETS if m in args.models]  # VAE's FID first
    for name in order:
        preset, smoke_preset, smoke_overrides = PRESETS[name]
        if args.smoke:
            preset = smoke_preset
        extra = smoke_overrides if args.smoke else []
        print(f"{preset}: training ...", flush=True)
        results[name] = train_and_evaluate(preset, extra + overrides, args.smoke, args.device,
                                           args.out / f"{name}.png", args.truncations)
        r = results[name]
        print(f"{preset}: {r['epochs']} epochs in {r['train_min']:.1f} min "
              f"({r['train_cpu_min']:.1f} CPU min), "
              f"eval {r['eval_min']:.1f} min: {r['final']}", flush=True)
    print(report(results, args.vae_fid))
    if args.json:
        met = verdicts(results, args.vae_fid)
        args.json.write_text(json.dumps({"results": results, "met": met},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
