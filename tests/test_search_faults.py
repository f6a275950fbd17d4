"""Workers under fire: killed outright, interrupted, and cut off from PostgreSQL mid-study."""

# Fixtures imported from dbs are used as test arguments, which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from dbs import (  # noqa: F401  (pytest fixtures are imported, then used as arguments)
    SECRET,
    PgServer,
    cli,
    finish,
    kill_tree,
    lstmbench_env,
    pg_server,
    start,
    tiny_study,
    wait_for,
    write_study,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyProbe:
    """Reads a study's trials straight from its RDB storage, tolerating a study not yet made."""

    def __init__(self, url: str, name: str) -> None:
        self.storage = RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        self.name = name

    def trials(self) -> list[FrozenTrial]:
        try:
            study_id = self.storage.get_study_id_from_name(self.name)
        except KeyError:
            return []
        return self.storage.get_all_trials(study_id)

    def trial(self, trial_id: int) -> FrozenTrial:
        return self.storage.get_trial(trial_id)

    def running_with_config(self, min_epochs: int = 0) -> FrozenTrial | None:
        """A RUNNING trial that has suggested its config (and trained ``min_epochs``)."""
        for t in self.trials():
            if (
                t.state == TrialState.RUNNING
                and "config" in t.user_attrs
                and t.user_attrs.get("epochs_done", 0) >= min_epochs
            ):
                return t
        return None

    def close(self) -> None:
        self.storage.engine.dispose()


@pytest.fixture
def procs() -> Any:
    """Processes a test starts; any still alive at the end are killed (with their children)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            kill_tree(proc)


def alive(proc: subprocess.Popen[str]) -> bool:
    """True while ``proc`` runs; fails the test at once, with its output, when it has ended."""
    if proc.poll() is None:
        return True
    pytest.fail(f"ended early\n{finish(proc, 5).explain()}", pytrace=False)


def _worker(study: Path, url: str) -> list[str]:
    return ["worker", str(study), "--storage", url, "--device", "cpu"]


@pytest.mark.slow
def test_sigkilled_worker_trial_is_failed_and_retried(
    tmp_path: Path,
    pg_server: PgServer,
    lstmbench_env: dict[str, str],
    procs: list[subprocess.Popen[str]],
) -> None:
    url = pg_server.url(pg_server.create_database())
    # Two epochs, LSTMs only: long enough to be caught mid-trial, short enough to retry.
    spec = tiny_study(
        "sigkill",
        budget={"epochs": 2, "trials": 4},
        search={"variant": ["lstm", "lstm_pos"]},
        fault={"heartbeat_interval": 1, "max_retries": 1},
    )
    study = write_study(tmp_path / "study.toml", spec)
    probe = StudyProbe(url, "sigkill")
    try:
        first = start(_worker(study, url), lstmbench_env, tmp_path)
        procs.append(first)

        def caught_mid_trial() -> FrozenTrial | None:
            """Freeze the worker while it holds a RUNNING trial; confirm, then kill it."""
            alive(first)
            seen = probe.running_with_config()
            if seen is None:
                return None
            os.kill(first.pid, signal.SIGSTOP)
            now = probe.trial(seen._trial_id)
            if now.state != TrialState.RUNNING:  # it finished between the two reads
                os.kill(first.pid, signal.SIGCONT)
                return None
            os.kill(first.pid, signal.SIGKILL)
            return now

        killed = wait_for(caught_mid_trial, 90, "a RUNNING trial of the first worker", 0.1)
        assert first.wait(10) == -signal.SIGKILL
        assert probe.trial(killed._trial_id).state == TrialState.RUNNING  # orphaned for now

        second = start(_worker(study, url), lstmbench_env, tmp_path)
        procs.append(second)
        result = finish(second, 120)
        assert result.returncode == 0, result.explain()

        trials = probe.trials()
        by_number = {t.number: t for t in trials}
        assert by_number[killed.number].state == TrialState.FAIL, by_number[killed.number]
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
        assert len(retries) == 1, [(t.number, t.system_attrs) for t in trials]
        retry = retries[0]
        assert retry.number > killed.number
        assert retry.params == killed.params
        assert retry.state == TrialState.COMPLETE, retry
        assert retry.user_attrs["config"]["model"]["variant"] == killed.params["variant"]
        assert sum(t.state in FINISHED for t in trials) == spec["budget"]["trials"]
        assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    finally:
        probe.close()


@pytest.mark.slow
def test_sigterm_fails_the_running_trial_as_interrupted(
    tmp_path: Path, lstmbench_env: dict[str, str], procs: list[subprocess.Popen[str]]
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    # Far more epochs than the test waits for: the trial is certainly still training.
    spec = tiny_study("sigterm", budget={"epochs": 200, "trials": 2}, search={"variant": ["lstm"]})
    study = write_study(tmp_path / "study.toml", spec)
    probe = StudyProbe(url, "sigterm")
    try:
        worker = start(_worker(study, url), lstmbench_env, tmp_path)
        procs.append(worker)

        def training() -> FrozenTrial | None:
            alive(worker)
            return probe.running_with_config(min_epochs=1)

        trial = wait_for(training, 90, "a trial that has trained one epoch")
        worker.send_signal(signal.SIGTERM)
        result = finish(worker, 30)
        assert result.returncode == 0, result.explain()
        assert "(interrupted)" in result.stderr, result.explain()

        after = probe.trial(trial._trial_id)
        assert after.state == TrialState.FAIL, after
        assert after.user_attrs.get("fail_reason") == "interrupted", after.user_attrs
        assert after.user_attrs["epochs_done"] < spec["budget"]["epochs"]
        assert not [t.number for t in probe.trials() if t.state == TrialState.RUNNING]
    finally:
        probe.close()


@pytest.mark.slow
def test_postgres_connections_cut_mid_study(
    tmp_path: Path,
    pg_server: PgServer,
    lstmbench_env: dict[str, str],
    procs: list[subprocess.Popen[str]],
) -> None:
    db = pg_server.create_database()
    url = pg_server.url(db, password=SECRET)  # also checks that the password never shows
    spec = tiny_study("cuts", budget={"epochs": 2, "trials": 6})
    study = write_study(tmp_path / "study.toml", spec)
    log_dir = tmp_path / "logs"
    args = ["launch", str(study), "--storage", url, "--workers", "2", "--log-dir", str(log_dir)]
    launcher = start(args, lstmbench_env, tmp_path)
    procs.append(launcher)

    def trials_by_state() -> Counter[str]:
        try:
            rows = pg_server.execute_in(db, "SELECT state, count(*) FROM trials GROUP BY state")
        except Exception:  # no table yet, or our own connection was cut
            return Counter()
        return Counter({str(state): n for state, n in rows})

    wait_for(lambda: alive(launcher) and trials_by_state()["RUNNING"], 120, "a RUNNING trial")
    cuts = []
    for _ in range(3):
        if launcher.poll() is not None:
            break
        cuts.append(pg_server.terminate_connections(db))
        time.sleep(2.0)
    result = finish(launcher, 180)
    logs = "\n".join(p.read_text() for p in sorted(log_dir.glob("worker-*.log")))
    assert result.returncode == 0, result.explain() + "\n--- worker logs ---\n" + logs
    assert len(cuts) >= 2 and all(n > 0 for n in cuts), f"connections cut per round: {cuts}"

    storage = RDBStorage(url)
    try:
        trials = optuna.load_study(study_name="cuts", storage=storage).get_trials()
    finally:
        storage.engine.dispose()
    states = Counter(t.state.name for t in trials)
    assert states["COMPLETE"] + states["PRUNED"] == spec["budget"]["trials"], states
    assert not states["RUNNING"] and not states["WAITING"], states
    assert SECRET not in result.output + logs


@pytest.mark.slow
def test_worker_survives_a_cut_while_opening_the_storage(
    tmp_path: Path,
    pg_server: PgServer,
    lstmbench_env: dict[str, str],
    procs: list[subprocess.Popen[str]],
) -> None:
    """A connection cut while a worker is still opening the storage (a database restart as a
    worker starts) is retried like any other, not fatal.

    Deterministic: the test holds a lock on Optuna's ``version_info`` table, which opening an
    RDB storage reads, cuts the worker's connection while it waits there, then lets go."""
    db = pg_server.create_database()
    url = pg_server.url(db)
    RDBStorage(url).engine.dispose()  # the tables exist; the worker creates the study
    spec = tiny_study("opening", budget={"trials": 2}, search={"variant": ["lstm"]})
    study = write_study(tmp_path / "study.toml", spec)

    def waiting_on_lock(locker: int) -> int | None:
        rows = pg_server.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
            "AND pid <> %s",
            (db, locker),
        )
        return rows[0][0] if rows else None

    lock = pg_server.connect_to(db)
    try:
        lock.execute("BEGIN")
        lock.execute("LOCK TABLE version_info IN ACCESS EXCLUSIVE MODE")
        worker = start(_worker(study, url), lstmbench_env, tmp_path)
        procs.append(worker)
        locker = lock.info.backend_pid
        blocked = wait_for(
            lambda: alive(worker) and waiting_on_lock(locker), 90, "the worker to open the storage"
        )
        pg_server.execute("SELECT pg_terminate_backend(%s)", (blocked,))
        time.sleep(0.5)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    result = finish(worker, 120)
    assert result.returncode == 0, result.explain()
    storage = RDBStorage(url)
    try:
        trials = optuna.load_study(study_name="opening", storage=storage).get_trials()
    finally:
        storage.engine.dispose()
    assert sum(t.state in FINISHED for t in trials) == spec["budget"]["trials"]
