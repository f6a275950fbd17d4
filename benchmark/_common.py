"""Helpers shared by the storage and search benchmarks (not a benchmark itself).

The header every benchmark prints, throw-away PostgreSQL and MariaDB databases, a whole-machine CPU
meter, and plain-text tables. Scripts in this folder import it as ``_common`` (Python puts the
script's folder first on ``sys.path``, and ``multiprocessing`` spawn children inherit that path).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import sqlalchemy

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MYSQL_ADMIN_URL = "mysql+pymysql://root@127.0.0.1:3306/"


# --- header ---------------------------------------------------------------------------------------


def cpu_model() -> str:
    """``lscpu``'s model name (``/proc/cpuinfo`` if lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def header_lines(extra: Sequence[str] = ()) -> list[str]:
    """Command, CPU model, core count, date, versions and load: the top of every output."""
    import optuna

    load = os.getloadavg()
    lines = [
        f"command: {shlex.join([sys.executable, *sys.argv])}",
        f"cpu: {cpu_model()} ({os.cpu_count()} cores)",
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"python {platform.python_version()}, optuna {optuna.__version__}, "
        f"sqlalchemy {sqlalchemy.__version__}",
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    ]
    return lines + list(extra)


def report_stream(json_mode: bool) -> TextIO:
    """Where the human-readable output goes: stdout, or stderr when stdout carries JSON."""
    return sys.stderr if json_mode else sys.stdout


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- machine load ---------------------------------------------------------------------------------


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, all cores together."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


DB_SERVERS = ("postgres", "mariadbd", "mysqld")


def db_server_ticks() -> dict[int, int]:
    """CPU ticks (user + system) used so far by each live PostgreSQL and MariaDB process."""
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm in DB_SERVERS:
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


def own_cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class CpuMeter:
    """Whole-machine CPU use over an interval, and the share of it that was neither this process
    (nor its waited-for children) nor a database server: ``others``, i.e. other people's load.

    Both are fractions of all cores. ``others`` is approximate: database servers serving other
    people count as ours, and children that have not been waited for count as others."""

    total: int = 0
    busy_ticks: int = 0
    own: float = 0.0
    db_start: dict[int, int] = field(default_factory=dict)
    db_seen: dict[int, int] = field(default_factory=dict)

    def start(self) -> CpuMeter:
        self.busy_ticks, self.total = machine_ticks()
        self.own = own_cpu_seconds()
        self.db_start = db_server_ticks()
        self.db_seen = dict(self.db_start)
        return self

    def sample_db(self) -> None:
        """Note the database processes' ticks now: a connection's server process exits with its
        connection, and only what was sampled before that is counted. Call it often when
        connections come and go (the meter samples at start and at every read)."""
        self.db_seen.update(db_server_ticks())

    def _db_ticks(self) -> int:
        self.sample_db()
        return sum(t - self.db_start.get(pid, 0) for pid, t in self.db_seen.items())

    def read(self, extra_own_seconds: float = 0.0) -> tuple[float, float]:
        """(busy, others) since :meth:`start`; ``extra_own_seconds``: CPU seconds that children
        not yet waited for used meanwhile (by their own account)."""
        busy_ticks, total = machine_ticks()
        dt, db = total - self.total, busy_ticks - self.busy_ticks
        if dt <= 0:
            return 0.0, 0.0
        hz = os.sysconf("SC_CLK_TCK")
        busy = max(0.0, db / dt)
        own = own_cpu_seconds() - self.own + extra_own_seconds
        ours = own * hz + self._db_ticks()
        return busy, min(busy, max(0.0, (db - ours) / dt))

    def db_seconds(self) -> float:
        """CPU seconds the database servers used since :meth:`start`."""
        return self._db_ticks() / os.sysconf("SC_CLK_TCK")

    def busy(self) -> float:
        return self.read()[0]


def add_idle_args(parser: argparse.ArgumentParser, before: str) -> None:
    """``--wait-idle S`` and ``--idle-threshold F``: wait for a quiet machine ``before`` each
    measurement (see ``wait_idle``)."""
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=10.0,
        metavar="S",
        help=f"before {before} wait up to S s for the CPU to be quieter than --idle-threshold "
        "(0: do not wait)",
    )
    parser.add_argument("--idle-threshold", type=float, default=0.25, metavar="F")


def parse_counts(parser: argparse.ArgumentParser, text: str, example: str) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]``; a parser error unless every count is a positive integer."""
    try:
        counts = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        parser.error(f"--workers: a comma-separated list of integers, e.g. {example}")
    if not counts or min(counts) < 1:
        parser.error("--workers must be positive")
    return counts


def wait_idle(max_seconds: float, threshold: float) -> float:
    """Wait, up to ``max_seconds``, until the machine's CPU use over one second is below
    ``threshold`` (a fraction of all cores). Returns the last reading."""
    deadline = time.monotonic() + max_seconds
    while True:
        meter = CpuMeter().start()
        time.sleep(1.0)
        busy = meter.busy()
        if busy < threshold or time.monotonic() >= deadline:
            return busy


# --- throw-away databases -------------------------------------------------------------------------


def _with_database(admin_url: str, name: str) -> str:
    return sqlalchemy.engine.make_url(admin_url).set(database=name).render_as_string(False)


@contextmanager
def temp_database(kind: str, admin_url: str, name: str | None = None) -> Iterator[str]:
    """Create database ``name`` (default ``lstmbench_bench_<pid>``) on the server of ``admin_url``
    (``kind`` is ``postgresql`` or ``mysql``), yield its SQLAlchemy URL, drop it afterwards."""
    name = name or f"lstmbench_bench_{os.getpid()}"
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if kind == "postgresql":
                conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS `{name}`"))
                conn.execute(sqlalchemy.text(f"CREATE DATABASE `{name}`"))
        yield _with_database(admin_url, name)
    finally:
        try:
            with engine.connect() as conn:
                if kind == "postgresql":
                    conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                else:
                    conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS `{name}`"))
        except sqlalchemy.exc.SQLAlchemyError as exc:
            progress(f"warning: could not drop database {name}: {exc}")
        engine.dispose()


def dispose(storage: Any) -> None:
    """Close an RDB storage's connection pool (so its database can be dropped)."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


# --- output ---------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(r: Sequence[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=False))
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(cells[0]), rule, *(fmt(r) for r in cells[1:])])


def elapsed(start: float) -> float:
    return time.perf_counter() - start
