"""The leaderboard: the best trial of each variant, re-trained with fresh seeds, scored on test.

For every variant of the study (``cnn`` included) it takes the best completed trial by validation
accuracy, re-trains that exact configuration with ``K`` new seeds and evaluates each run on the
**test** split — the only place the project touches it. It then reports, per variant, the mean,
standard deviation and 95 % Student-t interval of test accuracy and macro-F1, and compares each
variant with the best CNN and with plain ``lstm`` by a paired two-level bootstrap on per-example
correctness, Holm-corrected across variants.

Re-evaluations are cached in the study itself (as study system attributes, which the dashboard
does not show), keyed by the configuration and the seed, so a second run — from any machine that
reaches the storage — does not train again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from lstmbench.config import TrainConfig, from_dict, to_dict
from lstmbench.data import load
from lstmbench.seed import published
from lstmbench.space import StudySpec
from lstmbench.stats import (
    BootstrapResult,
    Interval,
    holm,
    mcnemar_exact,
    paired_bootstrap,
    t_interval,
)
from lstmbench.train import train

__all__ = ["Leaderboard", "Row", "SeedRun", "build_leaderboard", "compact_config"]

log = logging.getLogger(__name__)

EVAL_ATTR = "lstmbench:eval"
EVAL_SEED_BASE = 10_000  # re-evaluation seeds differ from every search trial's seed


@dataclass(frozen=True)
class SeedRun:
    """One re-training of a configuration, scored on the test split."""

    seed: int
    test_accuracy: float
    test_macro_f1: float
    train_seconds: float
    samples_per_second: float
    params: int
    predictions: np.ndarray = field(repr=False)

    def to_cache(self) -> dict[str, Any]:
        blob = dict(asdict(self), predictions=_pack(self.predictions))
        return blob

    @classmethod
    def from_cache(cls, blob: dict[str, Any]) -> SeedRun:
        return cls(**{**blob, "predictions": _unpack(blob["predictions"])})


def _pack(predictions: np.ndarray) -> str:
    return base64.b64encode(predictions.astype(np.uint16).tobytes()).decode()


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint16).astype(np.int64)


@dataclass
class Row:
    variant: str
    trials: int
    best_trial: int | None = None
    val_accuracy: float | None = None
    config: dict[str, Any] | None = None
    runs: list[SeedRun] = field(default_factory=list)
    accuracy: Interval | None = None
    macro_f1: Interval | None = None
    vs_cnn: BootstrapResult | None = None
    vs_lstm: BootstrapResult | None = None
    p_vs_cnn: float | None = None  # Holm-adjusted
    p_vs_lstm: float | None = None
    mcnemar_p_vs_cnn: float | None = None  # exact, first seed of each, unadjusted
    seed_published: dict[str, float] | None = None
    rank: int | None = None
    note: str = ""

    @property
    def params(self) -> int | None:
        return self.runs[0].params if self.runs else None

    @property
    def train_seconds(self) -> float | None:
        return float(np.mean([r.train_seconds for r in self.runs])) if self.runs else None

    @property
    def samples_per_second(self) -> float | None:
        return float(np.mean([r.samples_per_second for r in self.runs])) if self.runs else None

    @property
    def compact(self) -> str:
        return compact_config(self.config) if self.config else "–"


@dataclass
class Leaderboard:
    study: str
    dataset: str
    seeds: int
    test_examples: int
    rows: list[Row]
    generated: str
    confidence: float = 0.95
    interval: str = "Student-t over seeds"
    comparison: str = "paired two-level bootstrap (seeds and test examples), Holm-corrected"

    def to_dict(self) -> dict[str, Any]:
        def interval(i: Interval | None) -> dict[str, float] | None:
            return None if i is None else {k: _num(v) for k, v in asdict(i).items()}

        def boot(b: BootstrapResult | None) -> dict[str, float] | None:
            return None if b is None else {k: _num(v) for k, v in asdict(b).items()}

        rows = []
        for r in self.rows:
            rows.append(
                {
                    "rank": r.rank,
                    "variant": r.variant,
                    "trials": r.trials,
                    "best_trial": r.best_trial,
                    "val_accuracy": _num(r.val_accuracy),
                    "config": r.config,
                    "config_compact": r.compact,
                    "test_accuracy": interval(r.accuracy),
                    "test_macro_f1": interval(r.macro_f1),
                    "delta_vs_cnn": boot(r.vs_cnn),
                    "delta_vs_lstm": boot(r.vs_lstm),
                    "p_vs_cnn_holm": _num(r.p_vs_cnn),
                    "p_vs_lstm_holm": _num(r.p_vs_lstm),
                    "mcnemar_p_vs_cnn_first_seed": _num(r.mcnemar_p_vs_cnn),
                    "params": r.params,
                    "train_seconds": _num(r.train_seconds),
                    "samples_per_second": _num(r.samples_per_second),
                    "runs": [
                        {k: v for k, v in asdict(run).items() if k != "predictions"}
                        for run in r.runs
                    ],
                    "seed_published": r.seed_published,
                    "note": r.note,
                }
            )
        return {
            "study": self.study,
            "dataset": self.dataset,
            "seeds": self.seeds,
            "test_examples": self.test_examples,
            "generated": self.generated,
            "confidence": self.confidence,
            "interval": self.interval,
            "comparison": self.comparison,
            "rows": rows,
        }


def _num(value: float | None) -> float | None:
    """JSON has no NaN: missing or undefined numbers become null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def compact_config(config: dict[str, Any]) -> str:
    """A one-line summary of what was chosen, for tables."""
    model, emb = config["model"], config["model"]["embedding"]
    parts = []
    if model["variant"] != "cnn":
        parts.append(f"{model['layout']} h{model['hidden_size']}×{model['layers']}")
        if model["bidirectional"]:
            parts.append("bi")
        parts.append(model["readout"])
    parts.append(f"lr {config['lr']:.1e} bs {config['batch_size']}")
    if config.get("normalize"):
        parts.append("norm")
    from lstmbench.space import applicable

    used = applicable(
        model["variant"], {"layers": model["layers"], "learned_init": emb["learned_init"]}
    )
    if "learned_init" in used:
        parts.append(f"init {emb['learned_init']}")
    if "pos_lo" in used:
        parts.append(f"pos [{emb['pos_lo']:.2f},{emb['pos_hi']:.2f}]")
    if "channel_r" in used:
        parts.append("chl (" + ",".join(f"{v:.2f}" for v in emb["channel_values"]) + ")")
    if "sin_base" in used:
        parts.append(f"sin ×{emb['sin_scale']:.2f} b{emb['sin_base']:.0f}")
    return " · ".join(parts)


# --- selection ------------------------------------------------------------------------------------


def _variant_of(trial: optuna.trial.FrozenTrial) -> str | None:
    return trial.params.get("variant") or trial.user_attrs.get("variant")


def select_best(study: optuna.Study, variants: list[str]) -> list[Row]:
    """The best completed trial of each variant, and how many trials each variant got."""
    trials = study.get_trials(deepcopy=False)
    rows = []
    for variant in variants:
        mine = [t for t in trials if _variant_of(t) == variant]
        finished = [t for t in mine if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        complete = [t for t in mine if t.state == TrialState.COMPLETE and t.value is not None]
        row = Row(variant=variant, trials=len(finished))
        if complete:
            best = max(complete, key=lambda t: (t.value, -t.number))
            row.best_trial, row.val_accuracy = best.number, best.value
            row.config = best.user_attrs.get("config")
        else:
            row.note = "no finished trial"
        rows.append(row)
    return rows


# --- re-evaluation --------------------------------------------------------------------------------


def _cache_key(config: TrainConfig) -> str:
    """Identifies a re-evaluation: the config without where it ran or where the data lives."""
    blob = to_dict(config)
    blob.pop("device")
    for key in ("data_dir", "cache_dir", "download"):
        blob["data"].pop(key)
    digest = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]
    return f"{EVAL_ATTR}:{digest}:{config.seed}"


def _retrain_one(config_dict: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """Train once and score on test; runs in a worker process (or inline)."""
    if threads:
        os.environ["LSTMBENCH_THREADS"] = str(threads)
    config = from_dict(TrainConfig, config_dict)
    data = load(config.data)  # a cache hit after the first load
    result = train(config, data, evaluate_test=True)
    assert result.test is not None
    run = SeedRun(
        seed=config.seed,
        test_accuracy=result.test.accuracy,
        test_macro_f1=result.test.macro_f1,
        train_seconds=round(result.train_seconds, 3),
        samples_per_second=round(result.samples_per_second, 1),
        params=result.params,
        predictions=result.test.predictions.numpy(),
    )
    return run.to_cache()


def _eval_configs(row: Row, spec: StudySpec, seeds: int, device: str) -> list[TrainConfig]:
    assert row.config is not None
    base = from_dict(TrainConfig, row.config)
    return [
        base.replace(seed=EVAL_SEED_BASE + s, device=device, data=spec.data) for s in range(seeds)
    ]


def reevaluate(
    study: optuna.Study,
    rows: list[Row],
    spec: StudySpec,
    seeds: int,
    retrain: bool = True,
    device: str = "cpu",
    jobs: int = 1,
    on_run: Callable[[str], None] | None = None,
) -> None:
    """Fill each row's ``runs``: from the study's cache, else (when ``retrain``) by training."""
    cache = study._storage.get_study_system_attrs(study._study_id)
    todo: list[tuple[Row, TrainConfig]] = []
    for row in rows:
        if row.config is None:
            continue
        for config in _eval_configs(row, spec, seeds, device):
            key = _cache_key(config)
            if key in cache:
                row.runs.append(SeedRun.from_cache(cache[key]))
                if on_run:
                    on_run(f"{row.variant} seed {config.seed} (cached)")
            elif retrain:
                todo.append((row, config))
        if not retrain and len(row.runs) < seeds:
            row.note = f"{len(row.runs)}/{seeds} seeds cached (--no-retrain)"

    def store(row: Row, config: TrainConfig, blob: dict[str, Any]) -> None:
        study._storage.set_study_system_attr(study._study_id, _cache_key(config), blob)
        row.runs.append(SeedRun.from_cache(blob))
        if on_run:
            on_run(f"{row.variant} seed {config.seed}")

    if jobs <= 1 or len(todo) <= 1:
        for row, config in todo:
            store(row, config, _retrain_one(to_dict(config), None))
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs) if device == "cpu" else None
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # torch and fork do not mix
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = [
                (row, config, pool.submit(_retrain_one, to_dict(config), threads))
                for row, config in todo
            ]
            for row, config, future in futures:
                store(row, config, future.result())
    for row in rows:
        row.runs.sort(key=lambda r: r.seed)


# --- statistics -----------------------------------------------------------------------------------


def _correctness(row: Row, labels: np.ndarray) -> np.ndarray:
    return np.stack([(run.predictions == labels).astype(float) for run in row.runs])


def score(rows: list[Row], labels: np.ndarray, dataset: str, confidence: float = 0.95) -> None:
    """Intervals, comparisons with ``cnn`` and ``lstm``, Holm correction, ranks."""
    seed_figures = published(dataset)
    by_name = {r.variant: r for r in rows}
    for row in rows:
        row.seed_published = seed_figures.get(row.variant)
        if row.runs:
            row.accuracy = t_interval([r.test_accuracy for r in row.runs], confidence)
            row.macro_f1 = t_interval([r.test_macro_f1 for r in row.runs], confidence)
    for reference, attr in (("cnn", "vs_cnn"), ("lstm", "vs_lstm")):
        ref = by_name.get(reference)
        if ref is None or not ref.runs:
            continue
        ref_correct = _correctness(ref, labels)
        for i, row in enumerate(rows):
            if row is ref or not row.runs:
                continue
            result = paired_bootstrap(_correctness(row, labels), ref_correct, seed=i)
            setattr(row, attr, result)
            if reference == "cnn":
                row.mcnemar_p_vs_cnn = mcnemar_exact(
                    row.runs[0].predictions == labels, ref.runs[0].predictions == labels
                )
        adjusted = holm([getattr(r, attr).p_value if getattr(r, attr) else math.nan for r in rows])
        for row, p in zip(rows, adjusted, strict=True):
            if not math.isnan(p):
                setattr(row, "p_" + attr, p)
    ranked = sorted((r for r in rows if r.accuracy), key=lambda r: -r.accuracy.mean)  # type: ignore[union-attr]
    for rank, row in enumerate(ranked, 1):
        row.rank = rank
    rows.sort(key=lambda r: (r.rank is None, r.rank or 0))


def build_leaderboard(
    study: optuna.Study,
    spec: StudySpec,
    seeds: int = 3,
    retrain: bool = True,
    device: str = "cpu",
    jobs: int = 1,
    on_run: Callable[[str], None] | None = None,
) -> Leaderboard:
    """Select, re-evaluate and score; see the module docstring."""
    data = load(spec.data)
    rows = select_best(study, spec.variants)
    reevaluate(study, rows, spec, seeds, retrain=retrain, device=device, jobs=jobs, on_run=on_run)
    score(rows, data.test_y.numpy(), data.name)
    return Leaderboard(
        study=spec.name,
        dataset=data.name,
        seeds=seeds,
        test_examples=len(data.test_y),
        rows=rows,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
