"""Storage scaling on PostgreSQL: 1 to 32 worker processes with a no-op objective on one study.

For each worker count W (``--workers``, default 1,2,4,8,16,32) a study is created once, then W
processes are started (``multiprocessing``, spawn). Each opens its own storage through
``lstmbench.storage.open_storage`` (the project's engine settings, retries and, unless
``--heartbeat 0``, heartbeats every 5 s as in the demo study), loads the study and waits at a
barrier; when all are ready they run ``--trials-per-worker`` trials each, every one a turn of the
real worker's loop (fail stale trials, count the study's trials, ``study.optimize(objective,
n_trials=1)``). The no-op objective suggests 4 parameters, sets 5 user attributes, reports 2
intermediate values (each followed by ``should_prune()`` with a median pruner) and returns a
constant. It does not use ``lstmbench.space`` on purpose: that imports torch, which would cost
every worker some 2-3 CPU seconds and 300+ MB just to start (32 of them: ~10 GB).

Per W the table shows:

* ``startup s``: from starting the processes until all are ready (Python, Optuna, SQLAlchemy and
  psycopg imports, open_storage, load_study). On 2 cores this grows with W: it is CPU-bound.
* ``wall s`` and ``trials/s``: from the barrier to the last worker's last trial, and the trials in
  the storage divided by it; ``ms p50``/``ms p95``: one worker-loop turn as its worker saw it.
* ``client ms``/``db ms``: CPU time per trial of the workers (by their own account) and of the
  database server processes; ``busy``: the whole machine's CPU use in that phase, ``others``: the
  part of it that was neither ours nor a database server's (other people's load).
* ``conns``: the most connections to the benchmark database seen at once (``pg_stat_activity``,
  polled every 0.25 s), against the server's ``max_connections``.
* ``dup``: trial numbers held by more than one trial in the storage (SQL ``GROUP BY number``) plus
  numbers reported as completed by more than one worker; ``lost``: numbers a worker saw completed
  (Optuna's callback after the state was stored) that are not COMPLETE in the storage, plus
  numbers whose objective returned but that its worker never saw completed; ``running``: trials
  still RUNNING or WAITING after every worker has exited; ``failed``: trials in state FAIL;
  ``errors``: workers that raised. All of these must be 0; the script exits 1 otherwise.

The database ``lstmbench_bench_<pid>`` is created for the run and dropped afterwards. With 32
processes on 2 cores the figures measure CPU contention (Python clients and the server share the
cores) as much as PostgreSQL; the ``busy`` column shows it.

Run it from the repository root with the project's virtual environment::

    . .venv/bin/activate
    python benchmark/storage_scaling.py            # 1..32 workers, 10 trials each: 3-5 minutes
    python benchmark/storage_scaling.py --workers 1,2,4 --trials-per-worker 50
    python benchmark/storage_scaling.py --json               # a JSON list on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import sqlalchemy

from _common import (
    PG_ADMIN_URL,
    CpuMeter,
    add_idle_args,
    header_lines,
    parse_counts,
    progress,
    report_stream,
    table,
    temp_database,
    wait_idle,
)

# lstmbench.models.variant_names(), written out so that workers need not import torch
VARIANTS = (
    "cnn", "lstm", "lstm_pos", "lstm_chl", "lstm_pos_chl", "lstm_sin", "lstm_sin_chl",
    "lstm_learned_pos", "lstm_learned_chl", "lstm_learned_pos_chl", "lstm_sin2d",
)  # fmt: skip
BARRIER_TIMEOUT = 600.0


# --- the worker process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerJob:
    url: str
    study: str
    index: int
    trials: int
    heartbeat: int


def worker_main(job: WorkerJob, barrier: Any, results: Any) -> None:
    """One worker process: open the storage, wait for the others, run the trials, report."""
    out: dict[str, Any] = {"index": job.index, "error": None, "returned": [], "completed": []}
    try:
        _run_worker(job, barrier, out)
    except BaseException as exc:
        out["error"] = f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc()[-2000:]}"
        if not out.get("started"):
            with contextlib.suppress(Exception):
                barrier.abort()  # nobody waits forever for a worker that could not start
    results.put(out)


def _run_worker(job: WorkerJob, barrier: Any, out: dict[str, Any]) -> None:
    import socket

    import optuna
    from optuna.trial import FrozenTrial, TrialState

    from lstmbench import __version__
    from lstmbench.storage import count_trials, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    hostname = socket.gethostname()
    storage = open_storage(
        job.url, heartbeat_interval=job.heartbeat or None, max_retries=1
    )  # each worker its own engine and pool
    study = optuna.load_study(
        study_name=job.study,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(seed=job.index),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1),
    )
    returned: list[int] = out["returned"]
    completed: list[int] = out["completed"]
    other: list[tuple[int, str]] = []

    def objective(trial: optuna.Trial) -> float:
        variant = trial.suggest_categorical("variant", VARIANTS)
        trial.suggest_categorical("hidden_size", [32, 64])
        trial.suggest_float("lr", 1e-3, 1e-2, log=True)
        trial.suggest_float("pos_lo", -1.0, 1.0)
        trial.set_user_attr("config", {"variant": variant, "epochs": 2, "batch_size": 64})
        trial.set_user_attr("variant", variant)
        trial.set_user_attr("device", "cpu")
        trial.set_user_attr("hostname", hostname)
        trial.set_user_attr("lstmbench_version", __version__)
        for epoch in (1, 2):
            trial.report(0.5, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")
        returned.append(trial.number)
        return 0.5

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            completed.append(trial.number)
        else:
            other.append((trial.number, trial.state.name))

    out["ready_at"] = time.monotonic()
    barrier.wait(timeout=BARRIER_TIMEOUT)
    out["started"] = True
    cpu0 = os.times()
    t0 = time.monotonic()
    turns: list[float] = []
    for _ in range(job.trials):
        start = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        count_trials(study)
        study.optimize(
            objective, n_trials=1, catch=(Exception,), callbacks=[callback], gc_after_trial=False
        )
        turns.append(time.monotonic() - start)
    cpu1 = os.times()
    out.update(
        start=t0,
        end=time.monotonic(),
        cpu=(cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        turns=turns,
        other=other,
    )
    storage.engine.dispose()  # type: ignore[attr-defined]


# --- the parent -----------------------------------------------------------------------------------


class ConnectionPoller(threading.Thread):
    """Polls ``pg_stat_activity`` for the most connections to ``database`` seen at once, and
    samples the database processes' CPU for ``meter``."""

    def __init__(self, admin_url: str, database: str, meter: CpuMeter) -> None:
        super().__init__(daemon=True)
        self.meter = meter
        self.engine = sqlalchemy.create_engine(admin_url, pool_size=1, max_overflow=0)
        self.database = database
        self.peak = 0
        self.peak_total = 0
        self.stop = threading.Event()

    def run(self) -> None:
        query = sqlalchemy.text(
            "SELECT count(*) FILTER (WHERE datname = :db), count(*) FROM pg_stat_activity"
        )
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                ours, total = conn.execute(query, {"db": self.database}).one()
                conn.rollback()
                self.peak, self.peak_total = max(self.peak, ours), max(self.peak_total, total)
                self.meter.sample_db()
                self.stop.wait(0.25)
        self.engine.dispose()


def max_connections(admin_url: str) -> int:
    engine = sqlalchemy.create_engine(admin_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sqlalchemy.text("SHOW max_connections")).scalar_one())
    finally:
        engine.dispose()


def collect(results: Any, procs: list[Any]) -> list[dict[str, Any]]:
    """Every worker's report; a worker that died without one gets an error entry."""
    import queue

    outs: list[dict[str, Any]] = []
    quiet_since: float | None = None
    while len(outs) < len(procs):
        try:
            outs.append(results.get(timeout=1.0))
            quiet_since = None
        except queue.Empty:
            # exitcode (not is_alive(), which would reap the child and hide its CPU time)
            if all(p._popen is not None and p._popen.poll() is not None for p in procs):
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 5.0:
                    break
    seen = {o["index"] for o in outs}
    for i in range(len(procs)):
        if i not in seen:
            outs.append(
                {"index": i, "error": "died without a report", "returned": [], "completed": []}
            )
    return outs


def run_one(workers: int, url: str, admin_url: str, args: argparse.Namespace) -> dict[str, Any]:
    import optuna
    from optuna.trial import TrialState

    from lstmbench.storage import open_storage

    name = f"scaling-{workers}"
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name=name, direction="maximize")
    storage.engine.dispose()  # type: ignore[attr-defined]

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    results = ctx.Queue()
    jobs = [WorkerJob(url, name, i, args.trials_per_worker, args.heartbeat) for i in range(workers)]
    spawned = time.monotonic()
    procs = [ctx.Process(target=worker_main, args=(j, barrier, results)) for j in jobs]
    for proc in procs:
        proc.start()
    aborted = False
    try:
        barrier.wait(timeout=BARRIER_TIMEOUT)
    except threading.BrokenBarrierError:
        aborted = True
    released = time.monotonic()
    meter = CpuMeter().start()
    poller = ConnectionPoller(admin_url, sqlalchemy.engine.make_url(url).database or "", meter)
    poller.start()
    outs = collect(results, procs)
    busy, others = meter.read(extra_own_seconds=sum(o.get("cpu", 0.0) for o in outs))
    db_seconds = meter.db_seconds()
    poller.stop.set()
    poller.join()
    for proc in procs:
        proc.join(timeout=60)
    exit_codes = [proc.exitcode for proc in procs]

    # --- what the storage holds -------------------------------------------------------------------
    storage = open_storage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state for t in trials)
    with storage.engine.connect() as conn:  # type: ignore[attr-defined]
        dup_rows = conn.execute(
            sqlalchemy.text(
                "SELECT t.number, count(*) FROM trials t JOIN studies s USING (study_id) "
                "WHERE s.study_name = :name GROUP BY t.number HAVING count(*) > 1"
            ),
            {"name": name},
        ).all()
    storage.engine.dispose()  # type: ignore[attr-defined]
    complete_numbers = {t.number for t in trials if t.state == TrialState.COMPLETE}
    logged = Counter(n for o in outs for n in o["completed"])
    returned = {n for o in outs for n in o["returned"]}
    dup_in_logs = sum(1 for c in logged.values() if c > 1)
    lost = len(set(logged) - complete_numbers) + len(returned - set(logged))
    errors = [o["error"] for o in outs if o["error"]]
    errors += [f"worker exit code {c}" for c in exit_codes if c != 0]
    if aborted:
        errors.append("a worker failed before the start barrier")
    for err in errors:
        progress(f"worker error: {err}")
    ends = [o["end"] for o in outs if "end" in o]
    wall = (max(ends) - released) if ends else float("nan")
    turns = sorted(t * 1000 for o in outs for t in o.get("turns", []))
    ready = [o["ready_at"] for o in outs if "ready_at" in o]
    n = len(trials)
    return {
        "workers": workers,
        "trials_per_worker": args.trials_per_worker,
        "expected_trials": workers * args.trials_per_worker,
        "total_trials": n,
        "complete": states[TrialState.COMPLETE],
        "pruned": states[TrialState.PRUNED],
        "startup_s": round((max(ready) if ready else released) - spawned, 2),
        "wall_s": round(wall, 2),
        "trials_per_s": round(n / wall, 1) if wall > 0 else None,
        "turn_ms_p50": round(turns[len(turns) // 2], 1) if turns else None,
        "turn_ms_p95": round(turns[min(len(turns) - 1, int(0.95 * len(turns)))], 1)
        if turns
        else None,
        "client_cpu_ms_per_trial": round(1000 * sum(o.get("cpu", 0.0) for o in outs) / n, 1)
        if n
        else None,
        "db_cpu_ms_per_trial": round(1000 * db_seconds / n, 1) if n else None,
        "cpu_busy": round(busy, 2),
        "cpu_others": round(others, 2),
        "peak_connections": poller.peak,
        "peak_connections_server": poller.peak_total,
        "duplicates": len(dup_rows) + dup_in_logs,
        "lost": lost,
        "stuck_running": states[TrialState.RUNNING] + states[TrialState.WAITING],
        "failed": states[TrialState.FAIL],
        "worker_errors": len(errors),
        "heartbeat_interval": args.heartbeat or None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="a JSON list on stdout, the rest on stderr")
    p.add_argument("--workers", default="1,2,4,8,16,32", metavar="LIST")
    p.add_argument("--trials-per-worker", type=int, default=10, metavar="N")
    p.add_argument("--heartbeat", type=int, default=5, metavar="S", help="0: no heartbeats")
    p.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    add_idle_args(p, "each worker count")
    args = p.parse_args(argv)
    counts = parse_counts(p, args.workers, "1,2,4")
    if args.trials_per_worker < 1:
        p.error("--trials-per-worker must be positive")

    out = report_stream(args.json)
    limit = max_connections(args.pg_admin_url)
    print("\n".join(header_lines()), file=out)
    print(
        f"PostgreSQL max_connections {limit}; workers {counts}; {args.trials_per_worker} "
        f"trials per worker; heartbeat {args.heartbeat or 'off'}"
        + (f" ({args.heartbeat} s)" if args.heartbeat else ""),
        file=out,
        flush=True,
    )
    started = time.perf_counter()
    rows = []
    with temp_database("postgresql", args.pg_admin_url) as url:
        for w in counts:
            if args.wait_idle > 0:
                wait_idle(args.wait_idle, args.idle_threshold)
            row = run_one(w, url, args.pg_admin_url, args)
            rows.append(row)
            progress(
                f"{w:>3} workers: {row['total_trials']} trials in {row['wall_s']} s "
                f"({row['trials_per_s']} trials/s), startup {row['startup_s']} s, "
                f"dup {row['duplicates']} lost {row['lost']} running {row['stuck_running']} "
                f"failed {row['failed']} errors {row['worker_errors']}"
            )
    total = time.perf_counter() - started

    headers = (
        "workers", "trials", "startup s", "wall s", "trials/s", "ms p50", "ms p95",
        "client ms", "db ms", "busy", "others", "conns", "dup", "lost", "running", "failed",
        "errors",
    )  # fmt: skip
    lines = [
        (
            r["workers"],
            f"{r['total_trials']}/{r['expected_trials']}",
            f"{r['startup_s']:.1f}",
            f"{r['wall_s']:.2f}",
            r["trials_per_s"],
            r["turn_ms_p50"],
            r["turn_ms_p95"],
            r["client_cpu_ms_per_trial"],
            r["db_cpu_ms_per_trial"],
            f"{100 * r['cpu_busy']:.0f}%",
            f"{100 * r['cpu_others']:.0f}%",
            f"{r['peak_connections']}/{limit}",
            r["duplicates"],
            r["lost"],
            r["stuck_running"],
            r["failed"],
            r["worker_errors"],
        )
        for r in rows
    ]
    print(file=out)
    print(table(headers, lines), file=out)
    print(
        "\ntrials: in the storage / workers x trials per worker; ms p50/p95: one worker-loop turn; "
        "client ms, db ms: CPU per trial of the workers and of the database servers; busy: "
        "whole-machine CPU in the timed phase, others: the part of it not ours (all cores = 100%); "
        "conns: peak connections to the benchmark database / max_connections.",
        file=out,
    )
    print(f"total time: {total:.1f} s", file=out, flush=True)
    if args.json:
        print(json.dumps(rows))
    bad = any(
        r["duplicates"] or r["lost"] or r["stuck_running"] or r["failed"] or r["worker_errors"]
        for r in rows
    )
    bad = bad or any(r["total_trials"] != r["expected_trials"] for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
