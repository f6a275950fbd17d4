"""The search commands' contract with their user: bad study files and bad storages are one line on
stderr with exit code 2 and leave nothing behind; ``study create`` is idempotent and refuses to
attach a different search space; passwords never reach the output."""

# Fixtures imported from dbs are used as test arguments, which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from dbs import (  # noqa: F401  (pytest fixtures are imported, then used as arguments)
    SECRET,
    PgServer,
    Result,
    cli,
    cli_many,
    cli_together,
    lstmbench_env,
    pg_server,
    tiny_study,
    write_study,
)
from lstmbench.space import load_study_file

BAD_STUDY_FILES: dict[str, tuple[dict[str, Any], str]] = {
    # case → (sections changed in the tiny study, what the one error line must name)
    "unknown-key": ({"search": {"hidden_sise": [16]}}, "[search] hidden_sise: unknown key"),
    "inverted-range": (
        {"search": {"lr": {"low": 1e-2, "high": 1e-3, "log": True}}},
        "[search] lr: inverted range",
    ),
    "empty-choices": ({"search": {"hidden_size": []}}, "[search] hidden_size: empty list"),
    "unknown-variant": (
        {"search": {"variant": ["cnn", "lstm_bogus"]}},
        "[search] variant: unknown variant 'lstm_bogus'",
    ),
}
BAD_STORAGES: dict[str, tuple[str, str]] = {
    # case → (URL, with {tmp} for the test's directory; what the error line must say)
    "unsupported-scheme": ("redis://127.0.0.1:6379/0", "unsupported storage URL"),
    "closed-port": (
        f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/x",
        "cannot open storage postgresql+psycopg://postgres:***@127.0.0.1:1/x",
    ),
    "sqlite-missing-dir": ("sqlite:///{tmp}/missing/dir/x.db", "does not exist"),
}
# Bad input caught before any storage is opened: run with the embedded default storage, so a
# command that opened it too early would leave ./lstmbench.db behind. case → (command, extra
# arguments after the study file, what the error line must say).
BAD_BEFORE_STORAGE: dict[str, tuple[str, list[str], str]] = {
    "worker-unknown-device": ("worker", ["--device", "tpu"], "unknown device 'tpu'"),
    "worker-absent-gpu": ("worker", ["--device", "cuda:99"], "device 'cuda:99' asked for"),
    "launch-absent-gpu": ("launch", ["--devices", "cuda:99"], "device 'cuda:99' asked for"),
    "status-no-study": ("status", [], "lstmbench.db"),
}
# `study create` and `launch` open a storage the same way, `worker` with heartbeats on top; each
# run costs seconds (importing torch), so launch is tried where it matters most: a server down.
BAD_STORAGE_RUNS = [
    *((case, command) for case in BAD_STORAGES for command in ("study create", "worker")),
    ("closed-port", "launch"),
]


def _one_line_error(result: Result, command: str) -> str:
    """The checks every user mistake must pass; the error line."""
    assert result.returncode == 2, result.explain()
    assert "Traceback" not in result.output, result.explain()
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr\n{result.explain()}"
    assert lines[0].startswith(f"lstmbench {command}: error: "), result.explain()
    assert result.stdout == "", result.explain()
    return lines[0]


@pytest.fixture(scope="module")
def bad_runs(
    tmp_path_factory: pytest.TempPathFactory, lstmbench_env: dict[str, str]
) -> dict[str, Any]:
    """Every bad case run once, concurrently (each run is mostly importing torch): the bad
    study files against a valid SQLite storage holding one other study, and the bad storages
    with a valid study file, through each command that opens a storage."""
    root = tmp_path_factory.mktemp("bad")
    valid_db = root / "valid.db"
    optuna.create_study(study_name="existing", storage=f"sqlite:///{valid_db}")
    work = root / "work"  # the commands' working directory: must stay empty
    work.mkdir()
    jobs: dict[tuple[str, str], list[str]] = {}
    for case, (changes, _) in BAD_STUDY_FILES.items():
        path = write_study(root / f"{case}.toml", tiny_study(f"bad-{case}", **changes))
        jobs["file", case] = ["study", "create", str(path), "--storage", f"sqlite:///{valid_db}"]
    good = write_study(root / "good.toml", tiny_study("good"))
    for case, command in BAD_STORAGE_RUNS:
        url = BAD_STORAGES[case][0].format(tmp=root)
        jobs[command, case] = [*command.split(), str(good), "--storage", url]
    for case, (command, extra, _) in BAD_BEFORE_STORAGE.items():
        jobs["before-storage", case] = [command, str(good), *extra]
    results = cli_many(list(jobs.values()), lstmbench_env, work)
    return {
        "root": root,
        "work": work,
        "valid_db": valid_db,
        "results": dict(zip(jobs, results, strict=True)),
    }


@pytest.mark.parametrize("case", BAD_STUDY_FILES)
def test_bad_study_file_is_one_line_and_creates_nothing(
    case: str, bad_runs: dict[str, Any]
) -> None:
    result = bad_runs["results"]["file", case]
    line = _one_line_error(result, "study create")
    assert f"{case}.toml: " in line and BAD_STUDY_FILES[case][1] in line, line
    summaries = optuna.get_all_study_summaries(f"sqlite:///{bad_runs['valid_db']}")
    assert [s.study_name for s in summaries] == ["existing"]
    assert list(bad_runs["work"].iterdir()) == []


@pytest.mark.parametrize(("case", "command"), BAD_STORAGE_RUNS)
def test_bad_storage_is_one_line_and_creates_nothing(
    case: str, command: str, bad_runs: dict[str, Any]
) -> None:
    result = bad_runs["results"][command, case]
    line = _one_line_error(result, command)
    assert BAD_STORAGES[case][1] in line, line
    assert SECRET not in result.output
    assert not (bad_runs["root"] / "missing").exists()
    assert list(bad_runs["work"].iterdir()) == []  # no lstmbench.db, no lstmbench-logs


@pytest.mark.parametrize("case", BAD_BEFORE_STORAGE)
def test_bad_device_or_missing_study_creates_no_storage(
    case: str, bad_runs: dict[str, Any]
) -> None:
    command, _, needle = BAD_BEFORE_STORAGE[case]
    line = _one_line_error(bad_runs["results"]["before-storage", case], command)
    assert needle in line, line
    assert list(bad_runs["work"].iterdir()) == []  # no lstmbench.db, no lstmbench-logs


def test_password_masked_when_storage_unreachable(bad_runs: dict[str, Any]) -> None:
    result = bad_runs["results"]["study create", "closed-port"]
    assert result.returncode == 2, result.explain()
    assert SECRET not in result.output, result.explain()
    assert "postgres:***@127.0.0.1:1" in result.stderr, result.explain()


# --- study create ---------------------------------------------------------------------------------

ENQUEUE = [
    {"variant": "lstm", "lr": 0.002, "hidden_size": 16},
    {"variant": "lstm_pos", "lr": 0.003, "hidden_size": 16},
]


def _waiting_params(url: str, name: str) -> list[dict[str, Any]]:
    """The parameters of the study's enqueued (WAITING) trials."""
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        waiting = study.get_trials(states=(TrialState.WAITING,))
        return [t.system_attrs["fixed_params"] for t in waiting]
    finally:
        storage.engine.dispose()


@pytest.mark.slow
def test_study_create_is_idempotent_and_guards_the_search_space(
    tmp_path: Path, pg_server: PgServer, lstmbench_env: dict[str, str]
) -> None:
    url = pg_server.url(pg_server.create_database())
    spec = tiny_study("idem", enqueue=ENQUEUE)
    path = write_study(tmp_path / "idem.toml", spec)
    create = ["study", "create", str(path), "--storage", url]

    results = [cli(create, lstmbench_env, tmp_path) for _ in range(2)]
    for result in results:
        assert result.returncode == 0, result.explain()
    expected_hash = load_study_file(path).search_hash()
    assert f"search {expected_hash}" in results[-1].stdout
    assert "2 queued" in results[-1].stdout, results[-1].stdout

    summaries = optuna.get_all_study_summaries(url)
    assert [s.study_name for s in summaries] == ["idem"]
    study_attrs = summaries[0].user_attrs
    assert study_attrs["lstmbench:search_hash"] == expected_hash
    assert re.fullmatch(r"[0-9a-f]{16}", expected_hash)
    stored = study_attrs["lstmbench:spec"]
    assert stored["search"]["variant"] == ["cnn", "lstm", "lstm_pos"]
    assert stored["search"]["hidden_size"] == [16]
    assert stored["budget"]["trials"] == 6 and stored["enqueue"] == ENQUEUE
    waiting = _waiting_params(url, "idem")
    assert sorted(waiting, key=lambda p: p["lr"]) == ENQUEUE, "enqueued trials duplicated"

    # Same name, another search space: refused, naming the key. Only the target changed: fine.
    other = tiny_study("idem", enqueue=ENQUEUE, search={"hidden_size": [16, 32]})
    more = tiny_study("idem", enqueue=ENQUEUE, budget={"trials": 9})
    refused, allowed = cli_many(
        [
            ["study", "create", str(write_study(tmp_path / "other.toml", other)), "--storage", url],
            ["study", "create", str(write_study(tmp_path / "more.toml", more)), "--storage", url],
        ],
        lstmbench_env,
        tmp_path,
    )
    line = _one_line_error(refused, "study create")
    assert "[search] hidden_size" in line and "different search" in line, line
    assert allowed.returncode == 0, allowed.explain()
    assert "target 9 trials" in allowed.stdout, allowed.stdout

    summaries = optuna.get_all_study_summaries(url)
    assert [s.study_name for s in summaries] == ["idem"]
    assert summaries[0].user_attrs["lstmbench:search_hash"] == expected_hash
    assert len(_waiting_params(url, "idem")) == len(ENQUEUE)


@pytest.mark.slow
def test_study_create_racing_on_a_fresh_database(
    tmp_path: Path, pg_server: PgServer, lstmbench_env: dict[str, str]
) -> None:
    """Workers on several machines may all start against an empty database: each of them must
    either create the study (and its tables) or attach to it, never fail."""
    url = pg_server.url(pg_server.create_database())
    path = write_study(tmp_path / "race.toml", tiny_study("race", enqueue=ENQUEUE))
    create = ["study", "create", str(path), "--storage", url]
    results = cli_together([create] * 2, lstmbench_env, tmp_path)
    for result in results:
        assert result.returncode == 0, result.explain()
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["race"]
    waiting = _waiting_params(url, "race")
    assert sorted(waiting, key=lambda p: p["lr"]) == ENQUEUE, "enqueued trials duplicated"
