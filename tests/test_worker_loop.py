"""The worker's trial loop in-process: storage outages are waited out, other errors are not
swallowed (in-memory study, no training, no sleeping)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sqlalchemy

from lstmbench import worker
from lstmbench.space import load_study_file
from lstmbench.worker import WorkerOptions, WorkerReport

DEMO = Path(__file__).resolve().parents[1] / "studies" / "demo.toml"


def _outage() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("INSERT INTO trials", {}, ConnectionError("refused"))


@pytest.fixture()
def sleeps(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(worker.time, "sleep", slept.append)
    return slept


def _study_whose_optimize(monkeypatch, behaviour) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    monkeypatch.setattr(study, "optimize", lambda objective, **kwargs: behaviour(study))
    return study


def test_a_storage_outage_is_waited_out_with_back_off(monkeypatch, sleeps) -> None:
    calls = []

    def optimize(study: optuna.Study) -> None:
        calls.append(1)
        if len(calls) <= 3:  # the database is away for three turns
            raise _outage()
        study.add_trial(optuna.create_trial(value=0.5))

    study = _study_whose_optimize(monkeypatch, optimize)
    report = WorkerReport()
    options = WorkerOptions(max_trials=2, poll_seconds=0.5)
    worker._run_trials(study, load_study_file(DEMO), None, options, report)
    assert report.ran == 2 and len(study.trials) == 2
    assert sleeps == [0.5, 1.0, 2.0]  # doubling, and back to the start once a trial got through


def test_other_errors_are_not_mistaken_for_an_outage(monkeypatch, sleeps) -> None:
    def optimize(study: optuna.Study) -> None:
        raise RuntimeError("a bug, not a lost connection")

    study = _study_whose_optimize(monkeypatch, optimize)
    with pytest.raises(RuntimeError, match="a bug"):
        worker._run_trials(study, load_study_file(DEMO), None, WorkerOptions(), WorkerReport())
    assert sleeps == []


def test_the_loop_stops_at_the_study_target(monkeypatch, sleeps) -> None:
    spec = load_study_file(DEMO)
    study = _study_whose_optimize(
        monkeypatch, lambda study: study.add_trial(optuna.create_trial(value=0.5))
    )
    report = WorkerReport()
    worker._run_trials(study, spec, None, WorkerOptions(), report)
    assert report.ran == spec.target_trials == len(study.trials)
