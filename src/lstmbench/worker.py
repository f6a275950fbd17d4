"""The search worker: pull trials from a shared study until the study holds its target.

Many workers, on one machine or many, run this loop against one storage. The target is global:
a worker starts a trial only while finished + running trials are below it, and a trial that was
nevertheless created past the target (two workers asking at the same instant) is detected by its
number and given up at once. Each trial suggests a config, trains it through ``train()`` and
reports validation accuracy once per epoch so the pruner can stop it early.

Failures stay inside their trial: an exception marks the trial FAIL with a ``fail_reason`` user
attribute and the worker carries on. SIGTERM or SIGINT marks the running trial FAIL with the
reason ``interrupted`` and ends the worker with exit code 0. A worker that is killed outright
stops beating; after the grace period another worker fails its trial and re-queues its parameters.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

import optuna
from optuna.trial import TrialState

from lstmbench import __version__
from lstmbench.config import to_dict
from lstmbench.data import ImageData, load
from lstmbench.space import StudySpec, make_pruner, make_sampler, suggest
from lstmbench.storage import count_trials, ensure_study, is_connection_error, open_storage
from lstmbench.train import EpochMetrics, resolve_device, train

__all__ = ["TRIAL_ATTRS", "WorkerInterrupted", "WorkerOptions", "WorkerReport", "run_worker"]

log = logging.getLogger(__name__)

# The user attributes every finished trial carries (the leaderboard and the tests rely on them).
TRIAL_ATTRS = (
    "config",
    "val_accuracy",
    "val_macro_f1",
    "params",
    "train_seconds",
    "samples_per_second",
    "device",
    "precision",
    "hostname",
    "lstmbench_version",
)


class WorkerInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT. A KeyboardInterrupt, so Optuna marks the running trial FAIL."""


class SurplusTrialError(Exception):
    """This trial was created after other trials had already covered the study's target."""


@dataclass(frozen=True)
class WorkerOptions:
    device: str = "auto"
    max_trials: int | None = None
    heartbeat_interval: int | None = None  # None: the study file's
    worker_index: int | None = None  # seeds the sampler; None: derived from the process id
    poll_seconds: float = 2.0


@dataclass
class WorkerReport:
    ran: int = 0
    interrupted: bool = False


@contextmanager
def _interruptible() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into WorkerInterrupted for the duration."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise WorkerInterrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _is_surplus(study: optuna.Study, trial: optuna.Trial, target: int) -> bool:
    """True when the trials numbered before this one already cover the target on their own."""
    alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    earlier = study.get_trials(deepcopy=False, states=alive)
    return sum(t.number < trial.number for t in earlier) >= target


def _objective(
    spec: StudySpec, data: ImageData, device: str
) -> optuna.study.study.ObjectiveFuncType:
    hostname = socket.gethostname()

    def objective(trial: optuna.Trial) -> float:
        if _is_surplus(trial.study, trial, spec.target_trials):
            trial.set_user_attr("fail_reason", "surplus: the target was reached by other workers")
            raise SurplusTrialError(f"trial {trial.number} is past the study's target")

        def on_epoch(epoch: int, metrics: EpochMetrics) -> None:
            trial.set_user_attr("val_macro_f1", metrics.val_macro_f1)
            trial.set_user_attr("epochs_done", epoch)
            trial.report(float(metrics.val_accuracy or 0.0), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        try:  # from the suggestion on: whatever fails is this trial's failure, with its reason
            config = suggest(trial, spec, device)
            trial.set_user_attr("config", to_dict(config))
            trial.set_user_attr("variant", config.model.variant)
            trial.set_user_attr("device", device)
            trial.set_user_attr("hostname", hostname)
            trial.set_user_attr("lstmbench_version", __version__)
            result = train(config, data, on_epoch, evaluate_test=False)
        except optuna.TrialPruned:
            raise
        except BaseException as exc:
            reason = (
                "interrupted"
                if isinstance(exc, KeyboardInterrupt)
                else (f"{exc.__class__.__name__}: {exc}")
            )
            trial.set_user_attr("fail_reason", reason[:500])
            _free_device_memory()
            raise
        assert result.val is not None  # the study file guarantees a validation split
        trial.set_user_attr("val_accuracy", result.val.accuracy)
        trial.set_user_attr("val_macro_f1", result.val.macro_f1)
        trial.set_user_attr("params", result.params)
        trial.set_user_attr("train_seconds", round(result.train_seconds, 3))
        trial.set_user_attr("samples_per_second", round(result.samples_per_second, 1))
        trial.set_user_attr("device", result.device)
        trial.set_user_attr("precision", result.precision)
        return result.val.accuracy

    return objective


def _free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # after an OOM, the next trial starts from a clean allocator


def _fail_stale_trials(study: optuna.Study) -> None:
    """Fail trials whose worker stopped beating; the retry callback re-queues their params."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _run_trials(
    study: optuna.Study,
    spec: StudySpec,
    objective: optuna.study.study.ObjectiveFuncType,
    options: WorkerOptions,
    report: WorkerReport,
) -> None:
    """One trial at a time until the study holds its target, riding out storage outages.

    The storage retries its own calls, but creating a trial is deliberately not retried (a lost
    acknowledgement would create it twice); when the database is gone longer than the retries
    last, the worker waits and starts the turn again instead of dying.
    """
    outage_delay = options.poll_seconds
    while options.max_trials is None or report.ran < options.max_trials:
        try:
            _fail_stale_trials(study)
            counts = count_trials(study)
            if counts.finished >= spec.target_trials:
                return
            if counts.finished + counts.running >= spec.target_trials:
                time.sleep(options.poll_seconds)  # others are finishing the last trials
                continue
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            log.warning("storage unreachable (%s); trying again in %.0fs", exc, outage_delay)
            time.sleep(outage_delay)
            outage_delay = min(outage_delay * 2, 60.0)
            continue
        outage_delay = options.poll_seconds
        report.ran += 1


def run_worker(spec: StudySpec, url: str, options: WorkerOptions) -> WorkerReport:
    """Run trials of ``spec``'s study in ``url`` until it holds its target (or ``max_trials``)."""
    interval = options.heartbeat_interval or spec.heartbeat_interval
    report = WorkerReport()
    # Signals are turned into WorkerInterrupted from the start, so that a worker stopped while it
    # is still loading data or opening the storage exits as cleanly as one stopped mid-trial.
    with _interruptible():
        try:
            # Device and data first: bad input must leave nothing in (or as) the storage.
            resolve_device(options.device)
            data = load(spec.data)
            storage = open_storage(url, heartbeat_interval=interval, max_retries=spec.max_retries)
            ensure_study(spec, storage, url)
            index = options.worker_index if options.worker_index is not None else os.getpid()
            study = optuna.load_study(
                study_name=spec.name,
                storage=storage,
                sampler=make_sampler(spec, worker_seed=index),
                pruner=make_pruner(spec),
            )
            _run_trials(study, spec, _objective(spec, data, options.device), options, report)
        except WorkerInterrupted as exc:
            log.warning("worker interrupted (%s); the running trial is marked failed", exc)
            report.interrupted = True
    log.info("worker done: ran %d trial(s)", report.ran)
    return report
