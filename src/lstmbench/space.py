"""Study files: their schema, their validation, and ``suggest(trial, spec) → TrainConfig``.

A study file (TOML) names the study and its data, the objective, the budget, the sampler, the
pruner and the search space. It is validated completely when loaded, before anything touches a
storage, and every error names the file, the key and the problem.

The search space lives in ``[search]``, one key per dimension. A value is either a constant
(``layers = 1``), a list of choices (``hidden_size = [64, 128]``) or a range
(``lr = { low = 1e-4, high = 1e-2, log = true }``; integer bounds give an integer range). The space
is conditional: a dimension is only suggested for the variants that use it (LSTM sizes not for
``cnn``, channel values only for variants with a channel embedding, ...).

With ``balanced = true`` (the default) the variant is not sampled: trial ``n`` gets variant
``n mod k``. Trial numbers are handed out by the storage, so this is race-free across workers and
gives every variant the same number of trials, which is what makes "the best of each variant" a
fair comparison.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from lstmbench.config import (
    ConfigError,
    DataConfig,
    EmbeddingConfig,
    ModelConfig,
    TrainConfig,
    from_dict,
)
from lstmbench.models import get_variant, variant_names

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "BalancedSampler",
    "Dimension",
    "StudyFileError",
    "StudySpec",
    "load_study_file",
    "make_pruner",
    "make_sampler",
    "parse_study",
    "rotation_slot",
    "suggest",
]

# Dimension name → (where it lives, default). "model"/"embedding"/"train" address the configs.
DIMENSIONS: dict[str, tuple[str, Any]] = {
    "variant": ("model", "lstm"),
    "layout": ("model", "rows"),
    "hidden_size": ("model", 128),
    "layers": ("model", 1),
    "bidirectional": ("model", False),
    "dropout": ("model", 0.0),
    "readout": ("model", "last"),
    "seed_eval_dropout": ("model", False),
    "pos_lo": ("embedding", 1.0),
    "pos_hi": ("embedding", 2.0),
    "channel_r": ("embedding", 2.0),
    "channel_g": ("embedding", 2.5),
    "channel_b": ("embedding", 3.0),
    "sin_base": ("embedding", 10000.0),
    "sin_scale": ("embedding", 1.0),
    "learned_init": ("embedding", "fixed"),
    "lr": ("train", 1e-3),
    "batch_size": ("train", 128),
    "weight_decay": ("train", 0.0),
    "augment": ("train", True),
    "normalize": ("train", False),
}
LSTM_ONLY = ("layout", "hidden_size", "layers", "bidirectional", "readout")

SECTIONS: dict[str, dict[str, Any]] = {
    "study": {"name": None, "storage": None, "seed": 0, "description": ""},
    "data": {f: None for f in DataConfig.__dataclass_fields__},
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "budget": {"epochs": 3, "trials": 20},
    "sampler": {"kind": "tpe", "n_startup_trials": 10},
    "pruner": {
        "kind": "none",
        "min_epochs": 1,
        "reduction_factor": 3,
        "warmup_epochs": 1,
        "n_startup_trials": 5,
    },
    "fault": {"heartbeat_interval": 30, "max_retries": 2},
    "search": {"balanced": True, **{name: None for name in DIMENSIONS}},
}
SAMPLERS = ("tpe", "random", "grid")
LOCATION_KEYS = ("data_dir", "cache_dir", "download")
PRUNERS = ("none", "median", "hyperband")
METRICS = ("val_accuracy",)


class StudyFileError(ConfigError):
    """A study file that cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Dimension:
    """One search dimension: a constant, a list of choices, or an int/float range."""

    name: str
    kind: str  # "fixed", "choice", "int" or "float"
    value: Any = None
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list[Any]:
        """Values that validation tries: the constant, every choice, or both ends."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        return [self.low, self.high]

    def describe(self) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            return list(self.choices)
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}


@dataclass(frozen=True)
class StudySpec:
    """A validated study file."""

    name: str
    path: str
    storage: str | None
    seed: int
    description: str
    data: DataConfig
    metric: str
    epochs: int
    target_trials: int
    sampler: str
    n_startup_trials: int
    pruner: str
    min_epochs: int
    reduction_factor: int
    warmup_epochs: int
    pruner_startup_trials: int
    heartbeat_interval: int
    max_retries: int
    balanced: bool
    dimensions: dict[str, Dimension]
    enqueue: tuple[dict[str, Any], ...] = ()
    resolved: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def variants(self) -> list[str]:
        return [str(v) for v in self.dimensions["variant"].extremes()]

    def search_hash(self) -> str:
        """Identifies what a trial *means*: data, objective, epochs, space and fixed trials.

        The sampler, pruner, trial target and fault settings may change between runs of one
        study; these may not, since trials made under different ones would not be comparable.
        """
        part = {k: self.resolved[k] for k in ("data", "objective", "search", "enqueue")}
        # Where the files live is not what a trial means: machines differ in their paths.
        part["data"] = {k: v for k, v in part["data"].items() if k not in LOCATION_KEYS}
        part["epochs"] = self.resolved["budget"]["epochs"]
        blob = json.dumps(part, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def with_data_dir(spec: StudySpec, data_dir: str | None) -> StudySpec:
    """``spec`` reading its images from ``data_dir`` (a per-machine override; same search)."""
    if not data_dir:
        return spec
    data = replace(spec.data, data_dir=data_dir)
    resolved = {**spec.resolved, "data": {**spec.resolved["data"], "data_dir": data_dir}}
    return replace(spec, data=data, resolved=resolved)


# --- parsing and validation -----------------------------------------------------------------------


def load_study_file(path: str | Path) -> StudySpec:
    """Read and validate a study file."""
    p = Path(path)
    if not p.is_file():
        raise StudyFileError(f"{path}: study file not found; give the path of a .toml study file")
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyFileError(f"{path}: not valid TOML ({exc})") from None
    return parse_study(raw, str(path))


def parse_study(raw: dict[str, Any], path: str = "<study>") -> StudySpec:
    """Validate the study file contents ``raw`` (as read from TOML)."""

    def fail(where: str, message: str) -> StudyFileError:
        return StudyFileError(f"{path}: {where}: {message}")

    allowed = {**{k: dict for k in SECTIONS}, "enqueue": list}
    for key, value in raw.items():
        if key not in allowed:
            raise fail(f"[{key}]", f"unknown section; known sections: {', '.join(allowed)}")
        if not isinstance(value, allowed[key]):
            kind = "a table" if allowed[key] is dict else "an array of tables ([[enqueue]])"
            raise fail(key, f"must be {kind}")
    sections: dict[str, dict[str, Any]] = {}
    for section, defaults in SECTIONS.items():
        given = raw.get(section, {})
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise fail(
                f"[{section}] {unknown[0]}", f"unknown key; known keys: {', '.join(defaults)}"
            )
        sections[section] = {**defaults, **{k: v for k, v in given.items()}}

    study = sections["study"]
    if not isinstance(study["name"], str) or not study["name"].strip():
        raise fail("[study] name", 'must be a non-empty string, e.g. name = "my-search"')

    data_fields = {k: v for k, v in sections["data"].items() if v is not None}
    try:
        data = from_dict(DataConfig, data_fields)
    except ConfigError as exc:
        raise fail("[data]", str(exc)) from None

    if data.val_fraction <= 0:
        raise fail(
            "[data] val_fraction",
            "the search optimises validation accuracy; give a fraction > 0, e.g. 0.1",
        )

    objective = sections["objective"]
    if objective["metric"] not in METRICS:
        raise fail("[objective] metric", f"must be one of: {', '.join(METRICS)}")
    if objective["direction"] != "maximize":
        raise fail("[objective] direction", 'validation accuracy is maximised; use "maximize"')

    budget = sections["budget"]
    for key in ("epochs", "trials"):
        if not isinstance(budget[key], int) or budget[key] < 1:
            raise fail(f"[budget] {key}", f"must be a positive integer, got {budget[key]!r}")

    sampler, pruner, fault = sections["sampler"], sections["pruner"], sections["fault"]
    if sampler["kind"] not in SAMPLERS:
        raise fail(
            "[sampler] kind",
            f"unknown sampler {sampler['kind']!r}; choose one of: {', '.join(SAMPLERS)}",
        )
    if pruner["kind"] not in PRUNERS:
        raise fail(
            "[pruner] kind",
            f"unknown pruner {pruner['kind']!r}; choose one of: {', '.join(PRUNERS)}",
        )
    for sec, key, minimum in (
        ("pruner", "min_epochs", 1),
        ("pruner", "reduction_factor", 2),
        ("pruner", "warmup_epochs", 0),
        ("pruner", "n_startup_trials", 0),
        ("sampler", "n_startup_trials", 0),
        ("fault", "heartbeat_interval", 1),
        ("fault", "max_retries", 0),
    ):
        value = sections[sec][key]
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise fail(f"[{sec}] {key}", f"must be an integer >= {minimum}, got {value!r}")
    if pruner["min_epochs"] > budget["epochs"]:
        raise fail(
            "[pruner] min_epochs",
            f"{pruner['min_epochs']} exceeds [budget] epochs {budget['epochs']}",
        )

    search = sections["search"]
    if not isinstance(search["balanced"], bool):
        raise fail("[search] balanced", "must be true or false")
    dimensions = {name: _parse_dimension(name, search[name], fail) for name in DIMENSIONS}
    if search["variant"] in (None, "all"):
        dimensions["variant"] = Dimension("variant", "choice", choices=tuple(variant_names()))
    for name, dim in dimensions.items():
        _validate_dimension(dim, fail)
        if sampler["kind"] == "grid" and dim.kind in ("int", "float"):
            raise fail(f"[search] {name}", "the grid sampler takes lists of choices, not ranges")

    enqueue = tuple(raw.get("enqueue", []))
    for i, params in enumerate(enqueue):
        for key, value in params.items():
            if key not in DIMENSIONS:
                raise fail(f"[[enqueue]] #{i + 1} {key}", "unknown dimension")
            _validate_value(
                key, value, lambda msg, k=key, i=i: fail(f"[[enqueue]] #{i + 1} {k}", msg)
            )

    resolved = {
        "study": study,
        "data": {k: v for k, v in data_fields.items()},
        "objective": objective,
        "budget": budget,
        "sampler": sampler,
        "pruner": pruner,
        "fault": fault,
        "search": {
            "balanced": search["balanced"],
            **{n: d.describe() for n, d in dimensions.items()},
        },
        "enqueue": list(enqueue),
    }
    return StudySpec(
        name=study["name"].strip(),
        path=path,
        storage=study["storage"],
        seed=int(study["seed"]),
        description=str(study["description"]),
        data=data,
        metric=objective["metric"],
        epochs=budget["epochs"],
        target_trials=budget["trials"],
        sampler=sampler["kind"],
        n_startup_trials=sampler["n_startup_trials"],
        pruner=pruner["kind"],
        min_epochs=pruner["min_epochs"],
        reduction_factor=pruner["reduction_factor"],
        warmup_epochs=pruner["warmup_epochs"],
        pruner_startup_trials=pruner["n_startup_trials"],
        heartbeat_interval=fault["heartbeat_interval"],
        max_retries=fault["max_retries"],
        balanced=search["balanced"],
        dimensions=dimensions,
        enqueue=enqueue,
        resolved=resolved,
    )


def _parse_dimension(name: str, value: Any, fail: Callable[[str, str], Exception]) -> Dimension:
    where = f"[search] {name}"
    if value is None:
        return Dimension(name, "fixed", value=DIMENSIONS[name][1])
    if isinstance(value, list):
        if not value:
            raise fail(where, "empty list of choices; give at least one value")
        if len({json.dumps(v) for v in value}) != len(value):
            raise fail(where, "repeated choice")
        return Dimension(name, "choice", choices=tuple(value))
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"low", "high", "log", "step"})
        if unknown:
            raise fail(where, f"unknown range key {unknown[0]!r}; use low, high, log, step")
        if "low" not in value or "high" not in value:
            raise fail(where, "a range needs both low and high")
        low, high = value["low"], value["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise fail(where, "low and high must be numbers")
        if low > high:
            raise fail(where, f"inverted range: low {low} > high {high}; make low <= high")
        log = bool(value.get("log", False))
        if log and low <= 0:
            raise fail(where, f"a log range needs low > 0, got {low}")
        kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
        if kind == "int" and isinstance(DIMENSIONS[name][1], float):
            kind = "float"
        return Dimension(name, kind, low=low, high=high, log=log, step=value.get("step"))
    return Dimension(name, "fixed", value=value)


def _validate_value(name: str, value: Any, fail: Callable[[str], Exception]) -> None:
    """Let the config dataclasses judge one value of dimension ``name``."""
    try:
        _configs_from({name: value}, variant_override=None)
    except (ConfigError, TypeError) as exc:
        raise fail(str(exc)) from None


def _validate_dimension(dim: Dimension, fail: Callable[[str, str], Exception]) -> None:
    for value in dim.extremes():
        _validate_value(dim.name, value, lambda msg: fail(f"[search] {dim.name}", msg))


def _configs_from(
    values: dict[str, Any], variant_override: str | None
) -> tuple[ModelConfig, dict[str, Any]]:
    """Build the model config and the train-level keyword arguments from dimension values."""
    merged = {name: default for name, (_, default) in DIMENSIONS.items()}
    merged.update(values)
    if variant_override:
        merged["variant"] = variant_override
    lo, hi = sorted((float(merged["pos_lo"]), float(merged["pos_hi"])))
    embedding = EmbeddingConfig(
        pos_lo=lo,
        pos_hi=hi,
        channel_values=(merged["channel_r"], merged["channel_g"], merged["channel_b"]),
        sin_base=float(merged["sin_base"]),
        sin_scale=float(merged["sin_scale"]),
        learned_init=merged["learned_init"],
    )
    model_fields = {n for n, (where, _) in DIMENSIONS.items() if where == "model"}
    model = ModelConfig(**{n: merged[n] for n in model_fields}, embedding=embedding)
    train = {n: merged[n] for n, (where, _) in DIMENSIONS.items() if where == "train"}
    TrainConfig(model=model, **train)  # validates lr, batch size, ...
    return model, train


# --- suggestion -----------------------------------------------------------------------------------


def applicable(variant: str, values: dict[str, Any]) -> list[str]:
    """The dimensions that mean something for ``variant``, given the values chosen so far."""
    v = get_variant(variant)
    names = ["lr", "batch_size", "weight_decay", "augment", "normalize"]
    if v.family == "cnn":
        names.append("seed_eval_dropout")
    else:
        names += list(LSTM_ONLY)
        if values.get("layers", 1) > 1:
            names.append("dropout")
    fields = v.embedding_fields
    learned_zero = "learned_init" in fields and values.get("learned_init") == "zero"
    if "learned_init" in fields:
        names.append("learned_init")
    if "pos_lo" in fields and not (learned_zero and "pos" not in v.embeddings):
        names += ["pos_lo", "pos_hi"]
    if "channel_values" in fields and not (learned_zero and "chl" not in v.embeddings):
        names += ["channel_r", "channel_g", "channel_b"]
    if "sin_base" in fields:
        names += ["sin_base", "sin_scale"]
    return names


def suggest(trial: optuna.Trial, spec: StudySpec, device: str = "auto") -> TrainConfig:
    """The trial's configuration. Only the dimensions that apply to its variant are suggested."""
    values: dict[str, Any] = {"variant": spec.dimensions["variant"].suggest(trial)}
    # Order matters: "layers" decides "dropout", "learned_init" decides the embedding ranges.
    for first in ("layers", "learned_init"):
        if first in applicable(values["variant"], values):
            values[first] = spec.dimensions[first].suggest(trial)
    for name in applicable(values["variant"], values):
        if name not in values:
            values[name] = spec.dimensions[name].suggest(trial)
    model, train = _configs_from(values, variant_override=None)
    return TrainConfig(
        model=model,
        data=spec.data,
        epochs=spec.epochs,
        seed=spec.seed * 100_003 + trial.number,  # distinct per trial, reproducible from its number
        device=device,
        **train,
    )


# --- sampler and pruner ---------------------------------------------------------------------------


class BalancedSampler(BaseSampler):
    """Wraps a sampler and hands out the ``variant`` in turn: ``variants[slot mod k]``.

    A trial's slot is its number less the trials numbered before it whose variant was fixed in
    advance: enqueued trials and the re-runs of trials whose worker was lost. Those bring their
    own variant, so they must not take another variant's turn. Trial numbers come from the
    storage, so the rotation is the same whichever worker draws, and exact across any number of
    them. A trial that fails in training still counts as its variant's turn: the variant's own
    configuration failed.
    """

    def __init__(self, base: BaseSampler, variants: Sequence[str]) -> None:
        self._base = base
        self._variants = list(variants)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        space = self._base.infer_relative_search_space(study, trial)
        return {k: v for k, v in space.items() if k != "variant"}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._base.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if param_name == "variant":
            return self._variants[rotation_slot(study, trial) % len(self._variants)]
        return self._base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._base.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: Any, values: Sequence[float] | None
    ) -> None:
        self._base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._base.reseed_rng()


def rotation_slot(study: optuna.Study, trial: FrozenTrial) -> int:
    """``trial``'s turn in the balanced rotation (see ``BalancedSampler``)."""
    earlier = study.get_trials(deepcopy=False)
    fixed = sum(
        1
        for t in earlier
        if t.number < trial.number
        and ("fixed_params" in t.system_attrs or "failed_trial" in t.system_attrs)
    )
    return trial.number - fixed


def make_sampler(spec: StudySpec, worker_seed: int = 0) -> BaseSampler:
    """The study's sampler. ``worker_seed`` keeps parallel workers from drawing the same points."""
    seed = spec.seed + worker_seed
    if spec.sampler == "grid":
        grid = {n: list(d.choices) for n, d in spec.dimensions.items() if d.kind == "choice"}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if spec.sampler == "random":
        base: BaseSampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        base = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=spec.n_startup_trials, constant_liar=True
        )
    if spec.balanced and spec.dimensions["variant"].kind == "choice":
        return BalancedSampler(base, spec.variants)
    return base


class _OneVariantStorage(BaseStorage):
    """A read-through view of a storage in which a study holds only one variant's trials."""

    def __init__(self, base: BaseStorage, variant: str) -> None:
        self._base = base
        self._variant = variant

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = self._base.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return [t for t in trials if t.params.get("variant") == self._variant]


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: _OneVariantStorage, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._base, name)(*args, **kwargs)

    method.__name__ = name
    return method


for _name in BaseStorage.__abstractmethods__ - {"get_all_trials"}:
    setattr(_OneVariantStorage, _name, _delegate(_name))
_OneVariantStorage.__abstractmethods__ = frozenset()


class PerVariantPruner(optuna.pruners.BasePruner):
    """Prunes a trial only by comparison with trials of its own variant.

    Optuna's pruners compare a trial with every other trial of the study; here that would stop
    LSTM trials because the CNN learns faster, and starve the LSTM variants of epochs. Each
    decision is instead made on a view of the study holding only the trial's variant.
    """

    def __init__(self, base: optuna.pruners.BasePruner) -> None:
        self._base = base

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        variant = trial.params.get("variant")
        if variant is None:
            return self._base.prune(study, trial)
        view = optuna.Study(
            study_name=study.study_name,
            storage=_OneVariantStorage(study._storage, str(variant)),
            sampler=study.sampler,
            pruner=self._base,
        )
        return self._base.prune(view, trial)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """Epochs are the pruning resource; decisions compare a trial with its own variant only."""
    if spec.pruner == "hyperband":
        base: optuna.pruners.BasePruner = optuna.pruners.HyperbandPruner(
            min_resource=spec.min_epochs,
            max_resource=spec.epochs,
            reduction_factor=spec.reduction_factor,
        )
    elif spec.pruner == "median":
        base = optuna.pruners.MedianPruner(
            n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.warmup_epochs
        )
    else:
        return optuna.pruners.NopPruner()
    return PerVariantPruner(base)
