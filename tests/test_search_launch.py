"""``lstmbench launch`` end to end: two worker processes fill one study on every storage kind, and
what they leave behind is readable by Optuna's API, the stock ``optuna`` CLI and ``status``."""

# Fixtures imported from dbs are used as test arguments, which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

import lstmbench
from dbs import (  # noqa: F401  (pytest fixtures are imported, then used as arguments)
    OPTUNA,
    SECRET,
    PgServer,
    Result,
    cli,
    finish,
    kill_tree,
    lstmbench_env,
    mysql_url,
    pg_server,
    pg_url,
    start,
    tiny_study,
    wait_for,
    write_study,
)
from lstmbench.space import load_study_file
from lstmbench.worker import TRIAL_ATTRS

STORAGES = ("postgresql", "mariadb", "sqlite", "journal")
VARIANTS = {"cnn", "lstm", "lstm_pos"}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STATES = ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL")  # status's columns


@contextmanager
def open_study(url: str, name: str) -> Iterator[optuna.Study]:
    """The study ``name`` in ``url`` through Optuna's own API (engines disposed afterwards)."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        storage: optuna.storages.BaseStorage = JournalStorage(JournalFileBackend(url[8:]))
    else:
        storage = optuna.storages.RDBStorage(url)
    try:
        yield optuna.load_study(study_name=name, storage=storage)
    finally:
        if isinstance(storage, optuna.storages.RDBStorage):
            storage.engine.dispose()


def all_trials(url: str, name: str) -> list[FrozenTrial]:
    with open_study(url, name) as study:
        return study.get_trials()


@dataclass
class Launch:
    kind: str
    url: str
    name: str
    study_path: Path
    cwd: Path
    log_dir: Path
    target: int
    result: Result


@pytest.fixture(scope="module")
def launches(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    lstmbench_env: dict[str, str],
) -> Callable[[str], Launch]:
    """``launches(kind)``: the tiny study launched with 2 workers on that storage kind (run once
    per module and kind; the Optuna-CLI and status tests read the PostgreSQL one)."""
    done: dict[str, Launch] = {}

    def run(kind: str) -> Launch:
        if kind in done:
            return done[kind]
        cwd = tmp_path_factory.mktemp(f"launch-{kind}")
        if kind == "postgresql":
            url = request.getfixturevalue("pg_url")
        elif kind == "mariadb":
            url = request.getfixturevalue("mysql_url")
        elif kind == "sqlite":
            url = f"sqlite:///{cwd / 'x.db'}"
        else:
            url = f"journal:{cwd / 'j.log'}"
        name = f"launch-{kind}"
        spec = tiny_study(name)
        path = write_study(cwd / "study.toml", spec)
        log_dir = cwd / "logs"
        args = ["launch", str(path), "--storage", url, "--workers", "2", "--devices", "cpu"]
        result = cli([*args, "--log-dir", str(log_dir)], lstmbench_env, cwd, timeout=180)
        done[kind] = Launch(kind, url, name, path, cwd, log_dir, spec["budget"]["trials"], result)
        return done[kind]

    return run


def _worker_logs(run: Launch) -> str:
    return "\n".join(p.read_text() for p in sorted(run.log_dir.glob("worker-*.log")))


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORAGES)
def test_launch_two_workers_fill_the_study_exactly(
    kind: str, launches: Callable[[str], Launch]
) -> None:
    run = launches(kind)
    logs = _worker_logs(run)
    assert run.result.returncode == 0, run.result.explain() + "\n--- worker logs ---\n" + logs

    trials = all_trials(run.url, run.name)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), f"trial numbers not unique: {numbers}"
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == run.target, Counter(t.state.name for t in trials)
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # The only acceptable failures are surplus trials given up at once (two workers asking at
    # the same instant for the last slot).
    for t in trials:
        if t.state == TrialState.FAIL:
            assert str(t.user_attrs.get("fail_reason", "")).startswith("surplus"), t.user_attrs

    for t in finished:
        missing = [a for a in TRIAL_ATTRS if a not in t.user_attrs]
        assert not missing, f"trial {t.number} lacks user attrs {missing}"
        attrs = t.user_attrs
        assert isinstance(attrs["config"], dict)
        assert attrs["config"]["model"]["variant"] == t.params["variant"]
        assert attrs["config"]["epochs"] == 1
        assert t.value == pytest.approx(attrs["val_accuracy"])
        assert 0.0 <= attrs["val_accuracy"] <= 1.0
        assert 0.0 <= attrs["val_macro_f1"] <= 1.0
        assert isinstance(attrs["params"], int) and attrs["params"] > 0
        assert attrs["train_seconds"] > 0 and attrs["samples_per_second"] > 0
        assert attrs["device"] == "cpu"
        assert attrs["hostname"]
        assert attrs["lstmbench_version"] == lstmbench.__version__
    assert {t.params["variant"] for t in finished} == VARIANTS

    # Both workers ran and ended normally, and between them they account for every trial.
    ran = [int(n) for n in re.findall(r"worker finished: (\d+) trial", logs)]
    assert len(ran) == 2, logs
    assert sum(ran) == len(trials), (ran, len(trials))


def test_stock_optuna_cli_reads_the_study(
    launches: Callable[[str], Launch], lstmbench_env: dict[str, str]
) -> None:
    run = launches("postgresql")
    assert run.result.returncode == 0, run.result.explain()
    cmd = [OPTUNA, "trials", "--study-name", run.name, "--storage", run.url, "-f", "json"]
    proc = subprocess.run(
        cmd, env=lstmbench_env, cwd=run.cwd, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    trials = all_trials(run.url, run.name)
    assert sorted(row["number"] for row in listed) == [t.number for t in trials]
    states = Counter(row["state"] for row in listed)
    assert states["COMPLETE"] + states["PRUNED"] == run.target
    assert {row["params"]["variant"] for row in listed if row["state"] == "COMPLETE"} == VARIANTS


@pytest.fixture(scope="module")
def status_with_password(
    launches: Callable[[str], Launch], pg_server: PgServer, lstmbench_env: dict[str, str]
) -> tuple[Launch, Result]:
    """``lstmbench status`` on the PostgreSQL study, through a URL that carries a password
    (trust authentication ignores it, so the URL works)."""
    run = launches("postgresql")
    assert run.result.returncode == 0, run.result.explain()
    url = pg_server.url(run.url.rsplit("/", 1)[1], password=SECRET)
    return run, cli(["status", str(run.study_path), "--storage", url], lstmbench_env, run.cwd)


def _status_rows(text: str) -> dict[str, list[str]]:
    """The variant table of ``lstmbench status``: variant → its cells."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)[1:-1]]
        if cells and cells[0] in VARIANTS:
            rows[cells[0]] = cells[1:]
    return rows


def test_status_prints_counts_by_variant(status_with_password: tuple[Launch, Result]) -> None:
    run, result = status_with_password
    assert result.returncode == 0, result.explain()
    header = next(line for line in result.stdout.splitlines() if "variant" in line)
    columns = [c.strip() for c in re.split(r"[│┃|]", header)[2:-1]]
    assert columns[:5] == [s.lower() for s in STATES], header
    rows = _status_rows(result.stdout)
    assert set(rows) == VARIANTS, result.stdout

    trials = all_trials(run.url, run.name)
    for variant, cells in rows.items():
        mine = Counter(t.state.name for t in trials if t.params.get("variant") == variant)
        shown = dict(zip(STATES, map(int, cells[:5]), strict=True))
        assert shown == {s: mine.get(s, 0) for s in shown}, (variant, cells, mine)
    assert sum(int(cells[0]) + int(cells[1]) for cells in rows.values()) == run.target
    total = Counter(t.state.name for t in trials)
    assert f"{total['COMPLETE']} complete" in result.stdout
    assert re.search(r"best: trial \d+ · val acc", result.stdout), result.stdout


def test_status_masks_the_password(status_with_password: tuple[Launch, Result]) -> None:
    _, result = status_with_password
    assert result.returncode == 0, result.explain()
    assert "postgres:***@" in result.stdout  # the URL is shown, masked
    assert SECRET not in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_workers_share_a_study_through_the_grpc_storage_proxy(
    pg_url: str, tmp_path: Path, lstmbench_env: dict[str, str]
) -> None:
    """``lstmbench storage-proxy`` in front of PostgreSQL; two workers that know only grpc://."""
    port = _free_port()
    proxy = start(
        ["storage-proxy", "--storage", pg_url, "--port", str(port)], lstmbench_env, tmp_path
    )
    try:
        wait_for(lambda: _accepts(port) or proxy.poll() is not None, 60, "the proxy to listen")
        assert proxy.poll() is None, finish(proxy, 5).explain()
        spec = tiny_study("via-proxy")
        path = write_study(tmp_path / "study.toml", spec)
        url = f"grpc://127.0.0.1:{port}"
        args = ["launch", str(path), "--storage", url, "--workers", "2", "--devices", "cpu"]
        result = cli([*args, "--log-dir", str(tmp_path / "logs")], lstmbench_env, tmp_path, 180)
        assert result.returncode == 0, result.explain()
    finally:
        kill_tree(proxy)
    # The trials went through the proxy into PostgreSQL: read them there, directly.
    trials = all_trials(pg_url, "via-proxy")
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == spec["budget"]["trials"], Counter(t.state.name for t in trials)
    assert {t.params["variant"] for t in finished} == VARIANTS
    assert all(t.user_attrs["val_accuracy"] == pytest.approx(t.value) for t in finished)


@pytest.mark.slow
def test_the_shipped_demo_study_completes_on_the_embedded_default(
    tmp_path: Path, lstmbench_env: dict[str, str]
) -> None:
    """`lstmbench launch studies/demo.toml --workers 2`, as the README has it: no --storage, so
    the study lands in ./lstmbench.db; every variant gets its equal share."""
    study_file = Path(__file__).resolve().parents[1] / "studies" / "demo.toml"
    result = cli(["launch", str(study_file), "--workers", "2"], lstmbench_env, tmp_path, 300)
    assert result.returncode == 0, result.explain()
    assert (tmp_path / "lstmbench.db").is_file()
    spec = load_study_file(study_file)
    trials = all_trials(f"sqlite:///{tmp_path / 'lstmbench.db'}", spec.name)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == spec.target_trials
    share = spec.target_trials // len(spec.variants)
    assert Counter(t.params["variant"] for t in finished) == {v: share for v in spec.variants}
    for t in finished:
        assert not [a for a in TRIAL_ATTRS if a not in t.user_attrs], t.number
