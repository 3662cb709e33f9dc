"""Experiment specs: a YAML preset + ``key=value`` overrides, validated by pydantic.

``load_spec("cartpole-dqn", ["agent.lr=1e-3"], agent_configs)`` returns a ``Spec`` whose
``agent`` is the validated config model of the chosen algorithm. Every mistake raises
``SpecError`` with one line that names the bad item and the valid choices. The agent config
classes are handed in by the caller (the top layer), so this module never imports ``agents``.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PRESET_DIR = Path(__file__).parent / "presets"


class SpecError(ValueError):
    """A spec problem, already phrased as the one line the user sees."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AtariWrapperSpec(_Strict):
    """``env.wrapper: {type: atari}``: the standard Atari preprocessing (``envs.atari``) around
    an ALE env; the defaults are SB3's ``AtariWrapper`` with a 4-frame stack. The training envs
    get all of it; the env that evaluates and renders leaves out episodic life and reward
    clipping, so it plays whole games and reports the real score."""

    type: Literal["atari"] = "atari"
    noop_max: int = Field(30, ge=0)  # 1..noop_max no-ops after each reset
    frame_skip: int = Field(4, ge=1)  # the action repeated, max of the last two frames
    screen_size: int = Field(84, ge=8)  # grayscale, resized to screen_size x screen_size
    frame_stack: int = Field(4, ge=1)  # observation (frame_stack, screen_size, screen_size)
    terminal_on_life_loss: bool = True  # episodic life (training)
    clip_reward: bool = True  # reward -> sign(reward) (training)
    fire_reset: bool = True  # press FIRE at the start of each life (games with FIRE)

    def options(self) -> dict[str, Any]:
        return self.model_dump(exclude={"type"})


class EnvSpec(_Strict):
    id: str
    num_envs: int = Field(1, ge=1, le=4096)
    # auto: the env's numpy-vectorized entry point when it has one (and no wrapper), else sync.
    vectorization: Literal["auto", "sync", "async", "vector_entry_point"] = "auto"
    kwargs: dict[str, Any] = {}
    # preprocessing around gym.make (agents.common.make_env / make_vec_env); None: the env as is
    wrapper: AtariWrapperSpec | None = None


class TrainSpec(_Strict):
    steps: int = Field(ge=1)
    seed: int = Field(0, ge=0)
    eval_episodes: int = Field(10, ge=0)
    eval_every: int = Field(0, ge=0)  # env steps between evaluations; 0 = only at the end
    checkpoint_every: int = Field(10_000, ge=0)  # 0 = only the final checkpoint
    save_replay: bool = False  # DQN: put the replay buffer into checkpoints
    torch_threads: int = Field(1, ge=0)  # 0 = torch's default
    gif: bool = True  # render an evaluation episode into a GIF artifact
    gif_max_frames: int = Field(500, ge=1)


class Spec(_Strict):
    name: str
    description: str = ""
    env: EnvSpec
    agent: Any  # the algorithm's own config model, validated in load_spec
    train: TrainSpec

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d["agent"] = self.agent.model_dump(mode="json")
        return d


# ---- generative runs: data + model + trainer --------------------------------------------------

class DataSpec(_Strict):
    name: Literal["mnist5k", "digits", "mnist", "fashion-mnist", "cifar10"] = "mnist5k"
    root: str | None = None  # the folder of mnist / fashion-mnist / cifar10 files
    # dynamic: a fresh Bernoulli draw each epoch; auto: dynamic for models with a Bernoulli
    # likelihood (``model.binary``), none for the others
    binarize: Literal["auto", "none", "dynamic"] = "auto"
    seed: int = Field(0, ge=0)  # the split and test binarization; keep 0 to compare NLLs


class TrainerSpec(_Strict):
    """The ``train:`` section of a generative preset: what ``lab.trainer.Trainer`` needs."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(64, ge=1)
    seed: int = Field(0, ge=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # fp16 (with a GradScaler): CUDA only
    grad_clip: float | None = Field(None, gt=0)  # max global grad norm per optimizer
    ema: float | None = Field(None, gt=0, lt=1)  # EMA decay; the EMA weights evaluate and sample
    compile: bool = False  # torch.compile each of the model's compile_targets
    channels_last: bool = False  # NHWC weights: oneDNN's fast conv path (bf16 on AMX CPUs)
    schedule: Literal["constant", "cosine", "linear"] = "constant"  # per optimizer, per batch
    warmup_steps: int = Field(0, ge=0)
    eval_every: int = Field(1, ge=0)  # epochs between test-split evaluations; 0 = at the end
    sample_every: int = Field(5, ge=0)  # epochs between sample grids; 0 = at the end
    sample_n: int = Field(64, ge=1)
    checkpoint_every: int = Field(0, ge=0)  # batches between checkpoints; 0 = each epoch's end
    final_eval: Literal["full", "quick", "none"] = "full"  # generative.metrics at the end
    torch_threads: int = Field(1, ge=0)  # 0 = torch's default


class GenerativeSpec(_Strict):
    name: str
    description: str = ""
    data: DataSpec = DataSpec()
    model: Any  # the model family's own config, validated in validate_generative_spec
    train: TrainerSpec

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d["model"] = self.model.model_dump(mode="json")
        return d


def is_generative(raw: Mapping[str, Any]) -> bool:
    """A generative preset names a ``model``; an RL preset an ``agent``."""
    return "model" in raw and "agent" not in raw


def validate_generative_spec(raw: dict[str, Any],
                             model_configs: Mapping[str, type[BaseModel]]) -> GenerativeSpec:
    try:
        spec = GenerativeSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_explain(e, GenerativeSpec)) from None
    model_raw = spec.model
    if not isinstance(model_raw, dict) or "type" not in model_raw:
        raise SpecError(f"model.type is missing (valid models: {', '.join(sorted(model_configs))})")
    kind = model_raw["type"]
    if kind not in model_configs:
        raise SpecError(
            f"unknown model {kind!r}{_did_you_mean(str(kind), list(model_configs))} "
            f"(valid models: {', '.join(sorted(model_configs))})"
        )
    try:
        spec.model = model_configs[kind].model_validate(model_raw)
    except ValidationError as e:
        raise SpecError(_explain(e, model_configs[kind], prefix="model")) from None
    return spec


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_preset(name: str) -> dict[str, Any]:
    """The raw dict of a preset by name (``lab/presets/NAME.yaml``) or by a path to a YAML."""
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = PRESET_DIR / f"{name}.yaml"
        if not path.is_file():
            raise SpecError(
                f"unknown preset {name!r}{_did_you_mean(name, preset_names())} "
                f"(valid presets: {', '.join(preset_names())})"
            )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"preset {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"preset {path} must be a mapping, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    return raw


def parse_value(text: str) -> Any:
    """A YAML scalar/list, with YAML 1.1's gaps filled: ``3e-4`` is a float, not a string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``dotted.key=value`` in a copy of ``raw``."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise SpecError(f"override {item!r} is not key=value (example: agent.lr=3e-4)")
        node = out
        *parents, leaf = key.split(".")
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"override {item!r}: {'.'.join(parents[: i + 1])} is not a section")
            node = child
        node[leaf] = parse_value(text)
    return out


def load_spec(
    preset: str,
    overrides: list[str] | None = None,
    agent_configs: Mapping[str, type[BaseModel]] | None = None,
    env_ids: list[str] | None = None,
) -> Spec:
    """Preset + overrides -> a validated Spec, or SpecError with one clear line."""
    raw = apply_overrides(read_preset(preset), list(overrides or []))
    return validate_spec(raw, agent_configs or {}, env_ids)


def validate_spec(
    raw: dict[str, Any],
    agent_configs: Mapping[str, type[BaseModel]],
    env_ids: list[str] | None = None,
) -> Spec:
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_explain(e, Spec)) from None
    if spec.env.wrapper is not None and spec.env.vectorization == "vector_entry_point":
        raise SpecError("env.vectorization 'vector_entry_point' cannot be wrapped per env: with "
                        "env.wrapper use auto, sync or async")
    if env_ids is not None and spec.env.id not in env_ids:
        raise SpecError(
            f"unknown env id {spec.env.id!r}{_did_you_mean(spec.env.id, env_ids)} "
            f"(valid env ids: {', '.join(sorted(env_ids))})"
        )
    agent_raw = spec.agent
    if not isinstance(agent_raw, dict) or "algo" not in agent_raw:
        raise SpecError(f"agent.algo is missing (valid agents: {', '.join(sorted(agent_configs))})")
    algo = agent_raw["algo"]
    if algo not in agent_configs:
        raise SpecError(
            f"unknown agent {algo!r}{_did_you_mean(str(algo), list(agent_configs))} "
            f"(valid agents: {', '.join(sorted(agent_configs))})"
        )
    try:
        spec.agent = agent_configs[algo].model_validate(agent_raw)
    except ValidationError as e:
        raise SpecError(_explain(e, agent_configs[algo], prefix="agent")) from None
    return spec


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,3,7"`` -> [0, 3, 7]; ``"5"`` -> [5]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise SpecError(f"--seeds {text!r} is not a seed list (examples: 0-4, 0,3,7, 5)") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise SpecError(f"--seeds {text!r} must name distinct non-negative seeds (example: 0-4)")
    return seeds


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ---- error phrasing -------------------------------------------------------------------------

def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _walk(model: type[BaseModel], loc: tuple) -> tuple[type[BaseModel], list[str]]:
    """Follow ``loc`` through nested models: the model owning the last part, and the path
    with union tags (``('network', 'mlp', 'hidden')``) and list indices left out."""
    path: list[str] = []
    for i, part in enumerate(loc):
        if not isinstance(part, str):
            continue
        field = model.model_fields.get(part)
        if field is None:
            if i == len(loc) - 1:
                path.append(part)  # the unknown key itself
            continue  # a discriminated-union tag
        path.append(part)
        sub = _submodel(field.annotation, loc[i + 1:])
        if sub is not None and i < len(loc) - 1:
            model = sub
    return model, path


def _submodel(annotation: Any, loc: tuple) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in typing.get_args(annotation)
              if isinstance(a, type) and issubclass(a, BaseModel)]
    if len(models) == 1 and type(None) in typing.get_args(annotation):
        return models[0]  # an optional model (``Model | None``): no union tag in the location
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            tag = arg.model_fields.get("type")
            if tag is None or tag.default in loc:
                return arg
        else:
            found = _submodel(arg, loc)
            if found is not None:
                return found
    return None


def _explain(error: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    err = error.errors()[0]
    loc = tuple(err["loc"])
    owner, names = _walk(model, loc)
    path = ".".join(filter(None, [prefix, *names])) or "spec"
    if err["type"] == "extra_forbidden":
        fields = sorted(owner.model_fields)
        base = ".".join(filter(None, [prefix, *names[:-1]]))
        valid = ", ".join(f"{base}.{f}" if base else f for f in fields)
        return f"unknown key {path!r}{_did_you_mean(names[-1], fields)} (valid keys: {valid})"
    if err["type"] == "missing":
        return f"{path} is missing"
    return f"{path}: {err['msg']} (got {err.get('input')!r})"
