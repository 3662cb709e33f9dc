"""Generative runs end to end: spec -> data + model -> Trainer -> mlflow run -> final metrics,
and the ``lab train | eval | sample`` commands for them (``lab/commands.py`` dispatches here).

This is the top layer: it wires ``generative`` (models, data, metrics) to the shared trainer
and tracking. A run's mlflow record: the spec as params and ``spec.yaml``; per-epoch metrics
(``train/*``, ``test/*``, ``lr/*``, ``time/examples_per_sec``); sample grids under ``samples/``;
the final metrics as ``final/*``; the checkpoint under ``checkpoint/``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import lab
from lab.spec import (
    GenerativeSpec,
    SpecError,
    apply_overrides,
    flatten,
    is_generative,
    parse_seeds,
    preset_names,
    read_preset,
    validate_generative_spec,
)
from lab.tracking import RUNS_DIR, Tracker, find_run, tracking_uri

CHECKPOINT_TAG = "lab.checkpoint_dir"  # the same tag RL runs use
KIND_TAG, KIND = "kind", "generative"


class RunError(RuntimeError):
    """A run could not go on; the message is the one line the user sees."""


@dataclass
class GenResult:
    run_id: str
    status: str
    epochs: int = 0
    examples: int = 0
    train_s: float = 0.0
    wall_s: float = 0.0
    final: dict[str, float] = field(default_factory=dict)

    @property
    def examples_per_sec(self) -> float:
        return self.examples / self.train_s if self.train_s > 0 else float("nan")


# ---- wiring ---------------------------------------------------------------------------------

def model_registry() -> dict:
    """{type: (ConfigClass, build(config, image_shape))} of the generative models."""
    from generative import MODELS

    return dict(MODELS)


def final_metrics(model, data, *, device, generator, quick: bool) -> dict[str, float]:
    from generative.metrics import evaluate_model

    return evaluate_model(model, data, device=device, generator=generator, quick=quick,
                          cache_dir=RUNS_DIR / "cache")


def model_configs() -> dict:
    return {name: entry[0] for name, entry in model_registry().items()}


def load_generative_spec(preset: str, overrides: list[str] | None = None) -> GenerativeSpec:
    """Preset + overrides -> a validated GenerativeSpec, or SpecError with one clear line."""
    raw = apply_overrides(read_preset(preset), list(overrides or []))
    return validate_generative_spec(raw, model_configs())


def load_data(spec: GenerativeSpec):
    from generative.data import DatasetError, load_dataset

    try:
        return load_dataset(spec.data.name, spec.data.root, seed=spec.data.seed)
    except DatasetError as e:
        raise SpecError(str(e)) from None


def build_model(spec: GenerativeSpec, image_shape):
    return model_registry()[spec.model.type][1](spec.model, tuple(image_shape))


def binarize_mode(spec: GenerativeSpec, model) -> str:
    """``auto``: dynamic binarization for the models with a Bernoulli likelihood."""
    if spec.data.binarize != "auto":
        return spec.data.binarize
    return "dynamic" if getattr(model, "binary", False) else "none"


def data_batches(spec: GenerativeSpec, data, model):
    """``(train_batches(generator, indices), test_batches())`` for ``Trainer.fit``: binarized
    as the model needs, with the labels when the model is class-conditional."""
    from generative.data import batches

    binarize = binarize_mode(spec, model)
    labels = bool(getattr(model, "uses_labels", False))
    bs = spec.train.batch_size
    return (lambda gen, idx: batches(data, "train", bs, binarize=binarize, generator=gen,
                                     sampler=idx, labels=labels),
            lambda: batches(data, "test", max(bs, 256), binarize=binarize, labels=labels))


def build_trainer(spec: GenerativeSpec, data, device: str, *, fit_data: bool = True, **kwargs):
    """Seeded model + Trainer; raises SpecError (nothing written yet) on a bad combination.
    ``fit_data=False`` when a checkpoint will be loaded over it: what the model fits to the
    data (the GAN's k-means clusters) is in the checkpoint, so it is not fitted again."""
    import torch

    from lab.trainer import Trainer

    if spec.train.torch_threads:
        torch.set_num_threads(spec.train.torch_threads)
    torch.manual_seed(spec.train.seed)
    classes = getattr(spec.model, "classes", 0)
    if classes and classes != data.num_classes:
        raise SpecError(f"model.classes={classes}, but dataset {spec.data.name!r} has "
                        f"{data.num_classes} classes: set model.classes={data.num_classes} "
                        "(or 0 for an unconditional model)")
    clusters = getattr(spec.model, "clusters", 0)
    if clusters > len(data.train):
        raise SpecError(f"model.clusters={clusters}, but dataset {spec.data.name!r} has "
                        f"{len(data.train)} training images: set model.clusters between 1 and "
                        f"{len(data.train)} (or 0 for no clusters)")
    model = build_model(spec, data.image_shape)
    if fit_data and hasattr(model, "fit_data"):  # before the Trainer copies it (EMA)
        model.fit_data(data.train)
    return Trainer(model, spec.train, device=device, title=spec.name, **kwargs)


def spec_from_run(client, run_id: str) -> GenerativeSpec:
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "spec.yaml", tmp)
        raw = yaml.safe_load(Path(path).read_text())
    return validate_generative_spec(raw, model_configs())


def local_checkpoint(run) -> Path:
    """Where the run's checkpoint file lives on this machine (it may not exist)."""
    from lab.checkpoint import CHECKPOINT_NAME

    return Path(run.data.tags.get(CHECKPOINT_TAG, "")) / CHECKPOINT_NAME


def checkpoint_file(client, run, tmp: str) -> Path:
    """The run's checkpoint: the local file, else the logged artifact."""
    from lab.checkpoint import CHECKPOINT_NAME

    local = local_checkpoint(run)
    if local.is_file():
        return local
    try:
        return Path(client.download_artifacts(run.info.run_id,
                                              f"checkpoint/{CHECKPOINT_NAME}", tmp))
    except Exception:
        raise RunError(f"run {run.info.run_id} has no checkpoint yet") from None


# ---- train ----------------------------------------------------------------------------------

def prepare(spec: GenerativeSpec, device: str = "auto", show_progress: bool = True, *,
            fit_data: bool = True):
    """(data, trainer) of a spec: every input mistake surfaces here, before any run exists."""
    data = load_data(spec)
    return data, build_trainer(spec, data, device, fit_data=fit_data,
                               show_progress=show_progress)


def train(spec: GenerativeSpec, *, tracker: Tracker | None, device: str = "auto",
          group: str | None = None, resume_run_id: str | None = None,
          show_progress: bool = True, print_fn=print, prepared=None) -> GenResult:
    """Train ``spec`` into a new mlflow run (or continue ``resume_run_id``). Under torchrun
    only rank 0 has a ``tracker``; the others get None and learn the run from rank 0.
    ``prepared``: the (data, trainer) of ``prepare`` when the caller checked the spec first."""
    import torch

    from lab.checkpoint import NonFiniteLossError
    from lab.images import save_grid
    from lab.runner import git_commit

    data, trainer = prepared or prepare(spec, device, show_progress)
    run_id, ckpt_dir = None, None
    if trainer.is_main:
        if resume_run_id is None:
            run_id = tracker.start(params=flatten(spec.to_dict()), tags={
                KIND_TAG: KIND, "model": spec.model.type, "data": spec.data.name,
                "seed": str(spec.train.seed), "group": group or spec.name,
                "device": str(trainer.device), "world_size": str(trainer.world_size),
                "git_commit": git_commit(), "lab_version": lab.__version__,
                "preset": spec.name}, run_name=f"{spec.name}-s{spec.train.seed}")
            ckpt_dir = (RUNS_DIR / "checkpoints" / run_id).resolve()
            tracker.set_tags({CHECKPOINT_TAG: str(ckpt_dir)})
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "spec.yaml"
                path.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
                tracker.log_artifact(path)
        else:
            run_id = tracker.resume(resume_run_id)
            ckpt_dir = Path(tracker.client.get_run(run_id).data.tags[CHECKPOINT_TAG])
    if trainer.world_size > 1:
        shared = [run_id, ckpt_dir]
        torch.distributed.broadcast_object_list(shared, src=0)
        run_id, ckpt_dir = shared

    def on_samples(images, epoch):
        path = save_grid(images, Path(ckpt_dir) / "samples" / f"epoch_{epoch:04d}.png")
        tracker.log_artifact(path, "samples")

    trainer.attach(logger=tracker.logger if tracker else None, checkpoint_dir=ckpt_dir,
                   on_samples=on_samples)
    if resume_run_id is not None:
        if trainer.checkpoint_path.is_file():
            trainer.load_checkpoint(trainer.checkpoint_path)
            print_fn(f"resumed run {run_id} from step {trainer.global_step} "
                     f"(epoch {trainer.epoch} done)")
        else:
            print_fn(f"run {run_id} had no checkpoint yet: starting it again from step 0")

    train_batches, test_batches = data_batches(spec, data, trainer.model)
    start = time.monotonic()
    result = GenResult(run_id, "RUNNING")
    try:
        fit = trainer.fit(train_batches, len(data.train), test_batches)
        if trainer.is_main and spec.train.final_eval != "none":
            gen = torch.Generator(device=trainer.device).manual_seed(spec.train.seed)
            result.final = final_metrics(trainer.eval_model, data, device=trainer.device,
                                         generator=gen, quick=spec.train.final_eval == "quick")
            tracker.logger.log({f"final/{k}": v for k, v in result.final.items()},
                               step=trainer.epoch)
        if trainer.is_main:
            tracker.log_artifact(trainer.checkpoint_path, "checkpoint")
    except NonFiniteLossError as e:
        if trainer.is_main:
            tracker.logger.flush()
            tracker.finish("FAILED")
        kept = (f"last good checkpoint kept at {trainer.checkpoint_path}"
                if trainer.checkpoint_path.is_file() else "no checkpoint had been written yet")
        raise RunError(f"run {run_id} stopped: {e}; run marked FAILED; {kept}") from None
    except KeyboardInterrupt:
        if trainer.is_main:
            tracker.finish("KILLED")
        raise
    except Exception:  # a bug, not the user's input: the run must not stay RUNNING
        if trainer.is_main:
            tracker.finish("FAILED")
        raise
    if trainer.is_main:
        tracker.finish("FINISHED")
    result.status, result.epochs = "FINISHED", fit.epochs
    result.examples, result.train_s = fit.examples, fit.train_s
    result.wall_s = time.monotonic() - start
    return result


def load_run(client, run, device: str = "cpu"):
    """(spec, data, trainer) of a finished or running run, its checkpoint loaded."""
    spec = spec_from_run(client, run.info.run_id)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"compile": False})})
    data = load_data(spec)
    trainer = build_trainer(spec, data, device, fit_data=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainer.load_checkpoint(checkpoint_file(client, run, tmp))
    return spec, data, trainer


# ---- commands (lab/commands.py hands these over) ---------------------------------------------

def is_generative_preset(args) -> bool:
    if args.resume or not args.preset:
        return False
    return is_generative(read_preset(args.preset))


def generative_run(args):
    """The run named by ``args.run_id`` / ``args.resume`` if it is a generative one, else None
    (unknown ids and missing stores are left to the RL path's errors)."""
    run_id = getattr(args, "resume", None) or getattr(args, "run_id", None)
    uri = tracking_uri(args.tracking_uri)
    if not run_id or (uri.startswith("sqlite:///")
                      and not Path(uri.removeprefix("sqlite:///")).is_file()):
        return None
    from mlflow import MlflowClient

    run = find_run(MlflowClient(tracking_uri=uri), run_id)
    return run if run is not None and run.data.tags.get(KIND_TAG) == KIND else None


def run_train(args, run=None) -> int:
    from lab.commands import CommandError, _mlflow_ui_hint

    uri = tracking_uri(args.tracking_uri)
    if run is not None:  # --resume
        if args.preset or args.overrides or args.seeds:
            raise SpecError("--resume RUN_ID takes no preset, overrides or --seeds: the run's "
                            "own spec is used")
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        spec = spec_from_run(client, run.info.run_id)
        tracker = (Tracker(uri, client.get_experiment(run.info.experiment_id).name)
                   if _rank() == 0 else None)
        # a checkpoint to resume from carries what the model fitted to the data
        fitted = local_checkpoint(run).is_file()
        prepared = prepare(spec, args.device, not args.no_progress, fit_data=not fitted)
        try:
            result = train(spec, tracker=tracker, device=args.device, prepared=prepared,
                           resume_run_id=run.info.run_id, show_progress=not args.no_progress)
        except RunError as e:
            raise CommandError(str(e)) from None
        _print_result(spec, result)
        return 0

    spec = load_generative_spec(args.preset, args.overrides)
    seeds = parse_seeds(args.seeds) if args.seeds else [spec.train.seed]
    group = args.group or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for seed in seeds:
        one = spec.model_copy(update={"train": spec.train.model_copy(update={"seed": seed})})
        prepared = prepare(one, args.device, not args.no_progress)  # before the store is touched
        tracker = Tracker(uri, args.experiment) if _rank() == 0 else None
        try:
            result = train(one, tracker=tracker, device=args.device, group=group,
                           show_progress=not args.no_progress, prepared=prepared)
        except RunError as e:
            raise CommandError(str(e)) from None
        _print_result(one, result)
    if _rank() == 0:
        print(f"see the runs: {_mlflow_ui_hint(uri)}")
    return 0


def _print_result(spec: GenerativeSpec, r: GenResult) -> None:
    if _rank() != 0:  # under torchrun, rank 0 speaks for all
        return
    final = ", ".join(f"{k} {v:.4g}" for k, v in r.final.items())
    print(f"{spec.name} seed {spec.train.seed}: run {r.run_id} {r.status}: {r.epochs} epochs, "
          f"{r.examples:,} examples at {r.examples_per_sec:,.0f} examples/s, "
          f"{r.wall_s:.1f} s in all" + (f"; final: {final}" if final else ""))


def run_eval(args, run) -> int:
    import torch
    from mlflow import MlflowClient

    from lab.commands import CommandError

    client = MlflowClient(tracking_uri=tracking_uri(args.tracking_uri))
    try:
        spec, data, trainer = load_run(client, run, args.device)
    except RunError as e:
        raise CommandError(str(e)) from None
    gen = torch.Generator(device=trainer.device).manual_seed(spec.train.seed)
    metrics = final_metrics(trainer.eval_model, data, device=trainer.device, generator=gen,
                            quick=args.quick)
    print(f"run {run.info.run_id} ({spec.name}, {spec.model.type} on {spec.data.name}, "
          f"epoch {trainer.epoch}):")
    for key, value in metrics.items():
        print(f"  {key:28s} {value:.4f}")
    return 0


def run_sample(args) -> int:
    from lab.commands import CommandError, _client_for_existing
    from lab.images import save_grid

    if args.n < 1:
        raise SpecError(f"--n {args.n}: must be at least 1")
    if args.out and Path(args.out).suffix.lower() != ".png":
        raise SpecError(f"--out {args.out!r}: the file must end in .png")
    uri = tracking_uri(args.tracking_uri)
    client = _client_for_existing(uri)
    run = find_run(client, args.run_id)
    if run is None:
        raise SpecError(f"unknown run id {args.run_id!r} in {uri}")
    if run.data.tags.get(KIND_TAG) != KIND:
        raise SpecError(f"run {run.info.run_id} is not a generative run (lab sample needs one "
                        f"trained from a preset such as {', '.join(_generative_presets()[:3])})")
    try:
        spec, _, trainer = load_run(client, run, args.device)
    except RunError as e:
        raise CommandError(str(e)) from None
    images = trainer.sample(args.n, seed=args.seed)
    out = Path(args.out) if args.out else RUNS_DIR / "samples" / f"{run.info.run_id}.png"
    save_grid(images, out)
    print(f"wrote {out} ({args.n} samples of {spec.name}, epoch {trainer.epoch}, "
          f"seed {args.seed})")
    return 0


def _rank() -> int:
    """This process's rank under torchrun (0 outside it): only rank 0 opens the store."""
    import os

    return int(os.environ.get("RANK", 0))


def _generative_presets() -> list[str]:
    return [n for n in preset_names() if is_generative(read_preset(n))]

