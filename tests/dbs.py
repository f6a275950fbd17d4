"""Helpers for the search-service tests (``test_search_*.py``): fresh databases, tiny study files
and the ``lstmbench`` command run as real processes.

Every test session gets its own PostgreSQL and MariaDB databases, ``lstmbench_t_<pid>_<random>``,
dropped when the session ends. A server that cannot be reached skips the tests that need it, or
fails them when ``CI=true`` (CI must never pass by skipping).

Test modules import the fixtures they use explicitly (``from dbs import pg_url``), with ruff's
F401 and F811 silenced for them: pytest, not the module, uses those names.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
MYSQL_HOST, MYSQL_PORT, MYSQL_USER = "127.0.0.1", 3306, "root"
LSTMBENCH = [sys.executable, "-m", "lstmbench"]
OPTUNA = str(Path(sys.executable).with_name("optuna"))
SECRET = "s3cr3tpw"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(message: str) -> None:
    """Skip (locally) or fail (CI=true): a missing database must not turn CI green."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: database-backed tests must run)", pytrace=False)
    pytest.skip(message)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]


def db_name() -> str:
    return f"lstmbench_t_{os.getpid()}_{secrets.token_hex(3)}"


# --- PostgreSQL -----------------------------------------------------------------------------------


class PgServer:
    """The local PostgreSQL server; creates databases and drops them all in :meth:`close`."""

    def __init__(self) -> None:
        import psycopg

        self._psycopg = psycopg
        self.created: list[str] = []
        self.admin().close()  # raises when the server is unreachable

    def admin(self) -> Any:
        return self._psycopg.connect(
            host=PG_HOST,
            port=PG_PORT,
            user=PG_USER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.admin() as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def connect_to(self, name: str, autocommit: bool = True) -> Any:
        """A new connection to database ``name``."""
        return self._psycopg.connect(
            host=PG_HOST,
            port=PG_PORT,
            user=PG_USER,
            dbname=name,
            autocommit=autocommit,
            connect_timeout=5,
        )

    def execute_in(self, name: str, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` on a fresh connection to database ``name``."""
        with self.connect_to(name) as conn:
            return conn.execute(sql).fetchall()

    def create_database(self) -> str:
        name = db_name()
        self.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return name

    def url(self, name: str, password: str | None = None) -> str:
        creds = PG_USER if password is None else f"{PG_USER}:{password}"
        return f"postgresql+psycopg://{creds}@{PG_HOST}:{PG_PORT}/{name}"

    def terminate_connections(self, name: str) -> int:
        """Cut every connection to database ``name``; the number cut."""
        rows = self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        return sum(1 for (ok,) in rows if ok)

    def close(self) -> None:
        for name in self.created:
            self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = PgServer()
    except Exception as exc:
        server, problem = None, _first_line(exc)
    if server is None:
        unavailable(f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable: {problem}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def pg_url(pg_server: PgServer) -> str:
    """A fresh PostgreSQL database for this session (no password in the URL)."""
    return pg_server.url(pg_server.create_database())


# --- MariaDB --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A fresh MariaDB/MySQL database for this session."""
    try:
        import pymysql

        conn = pymysql.connect(
            host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, connect_timeout=5, autocommit=True
        )
    except Exception as exc:
        conn, problem = None, _first_line(exc)
    if conn is None:
        unavailable(f"MariaDB at {MYSQL_HOST}:{MYSQL_PORT} is unreachable: {problem}")
    name = db_name()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        yield f"mysql+pymysql://{MYSQL_USER}@{MYSQL_HOST}:{MYSQL_PORT}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


# --- study files ----------------------------------------------------------------------------------


def demo_study() -> dict[str, Any]:
    """The packaged demo study file, parsed."""
    text = resources.files("lstmbench").joinpath("studies/demo.toml").read_text()
    return tomllib.loads(text)


def tiny_study(name: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """The demo study cut down to seconds on two CPU cores: 300 synthetic training images, one
    epoch, 6 trials over cnn / lstm / lstm_pos, no pruning, heartbeats every 2 s.
    ``sections`` update (or, with a value of ``None``, delete) keys section by section."""
    study = demo_study()
    study["study"].update(name=name, description="lstmbench search-service test")
    study["data"].update(
        synthetic_train=400, synthetic_test=100, limit_train=300, limit_test=100, val_fraction=0.2
    )
    study["budget"].update(epochs=1, trials=6)
    study["sampler"].update(kind="random")
    study["pruner"] = {"kind": "none"}
    study["fault"].update(heartbeat_interval=2, max_retries=1)
    study["search"].update(variant=["cnn", "lstm", "lstm_pos"], hidden_size=[16], batch_size=32)
    for section, changes in sections.items():
        if section == "enqueue":
            study["enqueue"] = changes
            continue
        target = study.setdefault(section, {})
        for key, value in changes.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    return study


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(study: dict[str, Any]) -> str:
    lines: list[str] = []
    for section, table in study.items():
        if isinstance(table, list):  # [[enqueue]]
            for entry in table:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
                lines.append("")
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


def write_study(path: Path, study: dict[str, Any]) -> Path:
    path.write_text(dump_toml(study))
    assert tomllib.loads(path.read_text()) == study  # the writer round-trips
    return path


# --- running the command --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lstmbench_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for ``lstmbench`` processes: one tensor cache for the session (a tmp
    dir), no inherited storage URL, one torch thread per process (two cores, several workers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTMBENCH_")}
    env.update(
        LSTMBENCH_CACHE_DIR=str(tmp_path_factory.mktemp("lstmbench-cache")),
        LSTMBENCH_THREADS="1",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        COLUMNS="160",
    )
    return env


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def explain(self) -> str:
        return (
            f"$ {' '.join(self.args)}\n-> exit {self.returncode}\n"
            f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"
        )


def descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (from /proc), deepest last."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL a process this test started and everything it started (workers run in sessions
    of their own, so killing the launcher's group would not reach them)."""
    for pid in [*descendants(proc.pid), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def start(
    args: Sequence[str], env: dict[str, str], cwd: Path, stdout: Any = subprocess.PIPE
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*LSTMBENCH, *args],
        env=env,
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.PIPE if stdout == subprocess.PIPE else subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> Result:
    """Wait for ``proc``; on timeout kill it (and its workers) and fail with its output."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        out, err = proc.communicate()
        result = Result(list(map(str, proc.args)), proc.returncode, out or "", err or "")
        pytest.fail(f"timed out after {timeout:.0f} s\n{result.explain()}", pytrace=False)
    return Result(list(map(str, proc.args)), proc.returncode, out or "", err or "")


def cli(args: Sequence[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> Result:
    """Run ``lstmbench ARGS`` to the end."""
    return finish(start(args, env, cwd), timeout)


def cli_many(
    commands: Sequence[Sequence[str]], env: dict[str, str], cwd: Path, jobs: int = 4
) -> list[Result]:
    """Run several ``lstmbench`` commands concurrently (most of each is importing torch)."""
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(lambda args: cli(args, env, cwd), commands))


# Imports everything a command needs, says it is ready, waits for the go file, then runs the CLI:
# processes started together then reach the storage within milliseconds of each other.
_AT_BARRIER = """
import pathlib, sys, time
import lstmbench.cli, lstmbench.space, lstmbench.storage, lstmbench.worker, psycopg, pymysql
ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.002)
sys.exit(lstmbench.cli.main(sys.argv[3:]))
"""


def cli_together(
    commands: Sequence[Sequence[str]], env: dict[str, str], cwd: Path, timeout: float = 120
) -> list[Result]:
    """Run ``lstmbench`` commands so that they start their real work at the same instant (to
    provoke races); the results in order."""
    barrier = cwd / f"barrier-{secrets.token_hex(3)}"
    barrier.mkdir()
    go = barrier / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _AT_BARRIER, str(barrier / f"ready-{i}"), str(go), *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, args in enumerate(commands)
    ]
    try:
        wait_for(
            lambda: (
                all((barrier / f"ready-{i}").exists() for i in range(len(procs)))
                or any(p.poll() is not None for p in procs)
            ),
            timeout,
            "the racing commands to import lstmbench",
            0.05,
        )
    finally:
        go.touch()
    with ThreadPoolExecutor(len(procs)) as pool:
        results = list(pool.map(lambda p: finish(p, timeout), procs))
    for result, args in zip(results, commands, strict=True):
        result.args = [*LSTMBENCH, *args]  # not the barrier script
    return results


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(interval)
