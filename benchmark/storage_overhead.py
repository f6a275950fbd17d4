"""Storage overhead per trial: what one Optuna trial costs in each storage, with no training.

Every storage is opened through ``lstmbench.storage.open_storage``, so the project's real engine
settings (``pool_pre_ping``, pool sizes, the SQLite lock timeout) and its retry wrappers are what is
measured. The storages:

* ``sqlite``: ``sqlite:///<tmp>/overhead-<n>.db`` (a fresh file per repeat);
* ``postgresql``: ``postgresql+psycopg://postgres@127.0.0.1:5432/lstmbench_bench_<pid>``;
* ``mariadb``: ``mysql+pymysql://root@127.0.0.1:3306/lstmbench_bench_<pid>``;
* ``journal``: ``journal:<tmp>/overhead-<n>.log`` (Optuna's journal file, a fresh file per repeat).

The two server databases are created for the run and dropped at its end. Each RDB storage is also
measured with heartbeats on (``--heartbeat``, default 5 s as in the demo study): the worker then
fails stale trials before every trial and a thread records a heartbeat while the trial runs.

One trial is one turn of the real worker's loop (``lstmbench.worker.run_worker``): fail stale
trials, count the study's trials, then ``study.optimize(objective, n_trials=1, catch=...)`` on a
study created by ``ensure_study`` from the demo study file and loaded with the project's sampler
and pruner (``make_sampler``/``make_pruner``: the balanced variant rotation and the per-variant
median pruner), except that the sampler is ``random`` rather than TPE so that the figure is the
storage's and not TPE's (whose cost grows with the study). ``gc_after_trial`` is off for the same
reason (the real worker's ``gc.collect()`` is CPU time, not storage time). Two objectives
(``--profile``):

* ``minimal``: ``lstmbench.space.suggest`` (the real conditional space, 6-14 parameters), 5 user
  attributes (config, variant, device, hostname, version), 2 intermediate values each followed by
  ``should_prune()``, then a constant;
* ``worker``: the real ``lstmbench.worker`` objective with ``train`` replaced by a stub that
  reports 2 epochs: the surplus check, 5 + 2 x 2 + 7 = 16 user attributes, 2 intermediate values.

Each (storage, profile) runs ``--warmup`` untimed trials and then ``--trials`` timed ones in a fresh
study, ``--repeats`` times; the storages run in a rotated order on every repeat, so that load from
other processes falls on all of them alike. The table shows the median over repeats of the mean
ms/trial, the spread over repeats (min-max and (max-min)/median), trials/s (1000 / median), this
process's CPU time per trial (``cpu ms``; close to ms/trial means the client side, Optuna and
SQLAlchemy in Python, is the bottleneck rather than the database), the 95th percentile of single
trials, the mean of the first and the last quarter of the timed trials (reads of the whole study
grow with it), and for RDB storages the SQL statements, commits and connection checkouts per trial
(every checkout costs a pre-ping round trip), plus the time of one ``SELECT 1`` round trip.
``busy`` is the whole machine's CPU use during the measurement (database servers included) and
``others`` the part of it used by neither this process nor a database server: other people's load,
which ``--wait-idle`` tries to avoid (before each repeat it waits a while for a quiet machine).
On a shared machine the wall-clock figures follow other people's load; ``cpu ms`` does much less.
Every trial must end COMPLETE; the ``errors`` column counts those that did not.

Run it from the repository root with the project's virtual environment::

    . .venv/bin/activate
    python benchmark/storage_overhead.py                 # both profiles, 50 trials x 5 repeats
    python benchmark/storage_overhead.py --trials 50     # quicker
    python benchmark/storage_overhead.py --json          # a JSON list on stdout, the rest on stderr
    python benchmark/storage_overhead.py --storages sqlite,journal --profile minimal

``--pg-admin-url`` and ``--mysql-admin-url`` point at other servers (the user must be allowed to
create databases).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage

from _common import (
    MYSQL_ADMIN_URL,
    PG_ADMIN_URL,
    CpuMeter,
    add_idle_args,
    dispose,
    header_lines,
    progress,
    report_stream,
    table,
    temp_database,
    wait_idle,
)
from lstmbench import __version__
from lstmbench import worker as lstm_worker
from lstmbench.config import to_dict
from lstmbench.space import StudySpec, load_study_file, make_pruner, make_sampler, suggest
from lstmbench.storage import count_trials, ensure_study, open_storage

STORAGES = ("sqlite", "postgresql", "mariadb", "journal")
PROFILES = ("minimal", "worker")
EPOCHS = 2


@dataclass(frozen=True)
class Config:
    storage: str
    heartbeat: bool

    @property
    def label(self) -> str:
        return self.storage + ("+hb" if self.heartbeat else "")


@dataclass
class Counters:
    """SQL statements, commits and pool checkouts on one engine."""

    statements: int = 0
    commits: int = 0
    checkouts: int = 0

    def attach(self, engine: sqlalchemy.engine.Engine) -> None:
        def on_statement(*_: Any) -> None:
            self.statements += 1

        def on_commit(*_: Any) -> None:
            self.commits += 1

        def on_checkout(*_: Any) -> None:
            self.checkouts += 1

        sqlalchemy.event.listen(engine, "before_cursor_execute", on_statement)
        sqlalchemy.event.listen(engine, "commit", on_commit)
        sqlalchemy.event.listen(engine, "checkout", on_checkout)

    def snapshot(self) -> tuple[int, int, int]:
        return self.statements, self.commits, self.checkouts


@dataclass
class Run:
    """One repeat of one (storage, profile)."""

    per_trial_ms: list[float]
    cpu_ms: float  # this process's CPU time per timed trial (user + system, all threads)
    busy: float
    others: float
    counts: tuple[int, int, int] | None  # statements, commits, checkouts over the timed trials
    ping_ms: float | None
    errors: int


@dataclass
class Result:
    config: Config
    profile: str
    runs: list[Run] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        means = [statistics.fmean(r.per_trial_ms) for r in self.runs]
        med = statistics.median(means)
        every = sorted(ms for r in self.runs for ms in r.per_trial_ms)
        n = len(self.runs[0].per_trial_ms)
        q = max(1, n // 4)
        first = statistics.median(statistics.fmean(r.per_trial_ms[:q]) for r in self.runs)
        last = statistics.median(statistics.fmean(r.per_trial_ms[-q:]) for r in self.runs)
        counts = [r.counts for r in self.runs if r.counts is not None]
        pings = [r.ping_ms for r in self.runs if r.ping_ms is not None]

        def per_trial(i: int) -> float | None:
            return round(statistics.median(c[i] for c in counts) / n, 2) if counts else None

        return {
            "storage": self.config.storage,
            "heartbeat": self.config.heartbeat,
            "profile": self.profile,
            "trials": n,
            "repeats": len(self.runs),
            "ms_per_trial_median": round(med, 3),
            "ms_per_trial_min": round(min(means), 3),
            "ms_per_trial_max": round(max(means), 3),
            "spread_pct": round(100 * (max(means) - min(means)) / med, 1),
            "trials_per_s": round(1000 / med, 1),
            "cpu_ms_per_trial": round(statistics.median(r.cpu_ms for r in self.runs), 3),
            "trial_ms_p50": round(every[len(every) // 2], 3),
            "trial_ms_p95": round(every[min(len(every) - 1, int(0.95 * len(every)))], 3),
            "first_quarter_ms": round(first, 3),
            "last_quarter_ms": round(last, 3),
            "statements_per_trial": per_trial(0),
            "commits_per_trial": per_trial(1),
            "checkouts_per_trial": per_trial(2),
            "select1_ms": round(statistics.median(pings), 3) if pings else None,
            "cpu_busy": round(max(r.busy for r in self.runs), 2),
            "cpu_others": round(max(r.others for r in self.runs), 2),
            "errors": sum(r.errors for r in self.runs),
            "repeat_ms_per_trial": [round(m, 3) for m in means],
        }


# --- objectives -----------------------------------------------------------------------------------


def minimal_objective(spec: StudySpec) -> Callable[[optuna.Trial], float]:
    """Suggest the real space, 5 user attributes, 2 intermediate values, a constant."""
    import socket

    hostname = socket.gethostname()

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial, spec, "cpu")
        trial.set_user_attr("config", to_dict(config))
        trial.set_user_attr("variant", config.model.variant)
        trial.set_user_attr("device", "cpu")
        trial.set_user_attr("hostname", hostname)
        trial.set_user_attr("lstmbench_version", __version__)
        for epoch in range(1, EPOCHS + 1):
            trial.report(0.5, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")
        return 0.5

    return objective


def _stub_train(config: Any, data: Any, on_epoch: Any, evaluate_test: bool = False) -> Any:
    """Stands in for ``lstmbench.train.train``: two epochs, constant metrics, no work."""
    for epoch in range(1, EPOCHS + 1):
        on_epoch(epoch, SimpleNamespace(val_accuracy=0.5, val_macro_f1=0.5, epoch=epoch))
    return SimpleNamespace(
        val=SimpleNamespace(accuracy=0.5, macro_f1=0.5),
        params=1234,
        train_seconds=0.0,
        samples_per_second=0.0,
        device="cpu",
        precision="fp32",
    )


@contextlib.contextmanager
def stubbed_training() -> Iterator[None]:
    original = lstm_worker.train
    lstm_worker.train = _stub_train  # type: ignore[assignment]
    try:
        yield
    finally:
        lstm_worker.train = original  # type: ignore[assignment]


def worker_objective(spec: StudySpec) -> Callable[[optuna.Trial], float]:
    """The real worker objective (``lstmbench.worker._objective``); training is stubbed."""
    return lstm_worker._objective(spec, None, "cpu")  # type: ignore[arg-type]


# --- measurement ----------------------------------------------------------------------------------


def demo_spec(name: str, target: int) -> StudySpec:
    path = resources.files("lstmbench") / "studies" / "demo.toml"
    with resources.as_file(path) as p:
        spec = load_study_file(p)
    resolved = {
        **spec.resolved,
        "study": {**spec.resolved["study"], "name": name},
        "sampler": {**spec.resolved["sampler"], "kind": "random"},
        "budget": {**spec.resolved["budget"], "trials": target},
    }
    return dataclasses.replace(
        spec, name=name, sampler="random", target_trials=target, resolved=resolved
    )


def select1_ms(storage: BaseStorage, n: int = 200) -> float | None:
    engine = getattr(storage, "engine", None)
    if engine is None:
        return None
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1").scalar()
        start = time.perf_counter()
        for _ in range(n):
            conn.exec_driver_sql("SELECT 1").scalar()
        return (time.perf_counter() - start) * 1000 / n


def worker_turn(study: optuna.Study, objective: Callable[[optuna.Trial], float]) -> None:
    """One turn of ``run_worker``'s loop (without its target checks and ``gc_after_trial``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    count_trials(study)
    study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)


def measure(url: str, config: Config, profile: str, name: str, args: argparse.Namespace) -> Run:
    spec = demo_spec(name, target=args.warmup + args.trials + 1)
    storage = open_storage(
        url, heartbeat_interval=args.heartbeat if config.heartbeat else None, max_retries=1
    )
    try:
        counters = None
        if getattr(storage, "engine", None) is not None:
            counters = Counters()
            counters.attach(storage.engine)  # type: ignore[attr-defined]
        ensure_study(spec, storage, url)
        study = optuna.load_study(
            study_name=spec.name,
            storage=storage,
            sampler=make_sampler(spec, worker_seed=0),
            pruner=make_pruner(spec),
        )
        objective = minimal_objective(spec) if profile == "minimal" else worker_objective(spec)
        for _ in range(args.warmup):
            worker_turn(study, objective)
        before = counters.snapshot() if counters else None
        meter = CpuMeter().start()
        cpu_start = time.process_time()
        times = []
        for _ in range(args.trials):
            start = time.perf_counter()
            worker_turn(study, objective)
            times.append((time.perf_counter() - start) * 1000)
        busy, others = meter.read()
        cpu_ms = (time.process_time() - cpu_start) * 1000 / args.trials
        counts = None
        if counters and before:
            counts = tuple(a - b for a, b in zip(counters.snapshot(), before, strict=True))
        states = count_trials(study)
        errors = args.warmup + args.trials - states.complete
        return Run(times, cpu_ms, busy, others, counts, select1_ms(storage), errors)  # type: ignore[arg-type]
    finally:
        dispose(storage)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="a JSON list on stdout, the rest on stderr")
    p.add_argument("--trials", type=int, default=50, metavar="N", help="timed trials per repeat")
    p.add_argument("--warmup", type=int, default=10, metavar="N", help="untimed trials first")
    p.add_argument("--repeats", type=int, default=5, metavar="R")
    p.add_argument("--storages", default=",".join(STORAGES), metavar="LIST")
    p.add_argument("--profile", default="minimal,worker", metavar="LIST", help="minimal,worker")
    p.add_argument("--heartbeat", type=int, default=5, metavar="S", help="0: no +hb rows")
    p.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    p.add_argument("--mysql-admin-url", default=MYSQL_ADMIN_URL)
    p.add_argument("--tmp", metavar="DIR", help="where SQLite and journal files go")
    add_idle_args(p, "each repeat")
    args = p.parse_args(argv)
    storages = [s.strip() for s in args.storages.split(",") if s.strip()]
    profiles = [s.strip() for s in args.profile.split(",") if s.strip()]
    if not set(storages) <= set(STORAGES) or not storages:
        p.error(f"--storages: choose from {', '.join(STORAGES)}")
    if not set(profiles) <= set(PROFILES) or not profiles:
        p.error(f"--profile: choose from {', '.join(PROFILES)}")
    if args.trials < 4 or args.repeats < 1 or args.warmup < 0:
        p.error("--trials must be >= 4, --repeats >= 1, --warmup >= 0")

    out = report_stream(args.json)
    print("\n".join(header_lines()), file=out, flush=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    configs = [
        Config(s, hb)
        for s in storages
        for hb in ((False, True) if s != "journal" and args.heartbeat > 0 else (False,))
    ]
    results = {(c, prof): Result(c, prof) for prof in profiles for c in configs}
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="lstmbench_bench_", dir=args.tmp))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        urls: dict[str, str] = {}
        if "postgresql" in storages:
            urls["postgresql"] = stack.enter_context(temp_database("postgresql", args.pg_admin_url))
        if "mariadb" in storages:
            urls["mariadb"] = stack.enter_context(temp_database("mysql", args.mysql_admin_url))
        print(
            f"storages: {', '.join(storages)}; profiles: {', '.join(profiles)}; "
            f"{args.trials} timed trials after {args.warmup} warm-up, {args.repeats} repeats; "
            f"heartbeat interval {args.heartbeat} s; files in {tmp}",
            file=out,
            flush=True,
        )
        keys = list(results)
        serial = 0
        for rep in range(args.repeats):
            if args.wait_idle > 0:
                wait_idle(args.wait_idle, args.idle_threshold)
            shift = rep % len(keys)
            for config, prof in keys[shift:] + keys[:shift]:
                serial += 1
                name = f"overhead-{serial}"
                if config.storage == "sqlite":
                    url = f"sqlite:///{tmp}/{name}.db"
                elif config.storage == "journal":
                    url = f"journal:{tmp}/{name}.log"
                else:
                    url = urls[config.storage]
                run = measure(url, config, prof, name, args)
                results[(config, prof)].runs.append(run)
                progress(
                    f"repeat {rep + 1}/{args.repeats} {config.label:<14} {prof:<8} "
                    f"{statistics.fmean(run.per_trial_ms):8.2f} ms/trial"
                    + (f"  ERRORS {run.errors}" if run.errors else "")
                )
    rows = [results[k].row() for k in results]
    total = time.perf_counter() - started

    def opt(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    headers = (
        "storage", "profile", "ms/trial", "min-max", "spread", "trials/s", "cpu ms", "p95 ms",
        "q1->q4 ms", "stmts", "commits", "checkouts", "SELECT1 ms", "busy", "others", "errors",
    )  # fmt: skip
    lines = [
        (
            ("+".join([r["storage"], "hb"]) if r["heartbeat"] else r["storage"]),
            r["profile"],
            f"{r['ms_per_trial_median']:.2f}",
            f"{r['ms_per_trial_min']:.2f}-{r['ms_per_trial_max']:.2f}",
            f"{r['spread_pct']:.1f}%",
            f"{r['trials_per_s']:.1f}",
            f"{r['cpu_ms_per_trial']:.1f}",
            f"{r['trial_ms_p95']:.2f}",
            f"{r['first_quarter_ms']:.1f}->{r['last_quarter_ms']:.1f}",
            opt(r["statements_per_trial"], ".1f"),
            opt(r["commits_per_trial"], ".1f"),
            opt(r["checkouts_per_trial"], ".1f"),
            opt(r["select1_ms"], ".3f"),
            f"{100 * r['cpu_busy']:.0f}%",
            f"{100 * r['cpu_others']:.0f}%",
            r["errors"],
        )
        for r in rows
    ]
    print(file=out)
    print(table(headers, lines), file=out)
    print(
        f"\nms/trial: median over {args.repeats} repeats of the mean of {args.trials} trials; "
        "stmts/commits/checkouts: per trial (each checkout is a pre-ping round trip); "
        "busy: whole-machine CPU use and others: the part of it neither this process nor a "
        "database server used (both the largest over repeats; all cores = 100%).",
        file=out,
    )
    print(f"total time: {total:.1f} s", file=out, flush=True)
    if args.json:
        print(json.dumps(rows))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    with stubbed_training():
        sys.exit(main())
