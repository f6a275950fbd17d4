"""Test helpers: headless Chromium, the dashboard as a subprocess, and one tiny finished study.

* :func:`require_chromium` — the browser tests need ``/usr/bin/chromium``
  (``scripts/install-test-deps.sh`` installs it). Missing: with ``CI`` set the test FAILS, so CI
  cannot silently stop testing the browser; elsewhere it is skipped with the reason.
* :func:`dump_dom` and :func:`screenshot` — one headless Chromium run each (``--dump-dom``,
  ``--screenshot``) with a fresh profile, killed with its whole process group on timeout.
* :class:`Dashboard` — ``lstmbench dashboard`` on a free port, waited for, always stopped.
* :func:`tiny_study` — a small synthetic study (4 variants, 3 trials, so the last variant never
  runs), searched by ``run_worker`` and then ranked once by the ``lstmbench leaderboard`` command.
  Built once per test process and shared by test_leaderboard.py and test_browser.py: the search
  and the first leaderboard are the slow part of both.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Flags for every run: no sandbox (root in a container), no GPU, and nothing that reaches out to
# the network or depends on a previous profile.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


# --- chromium -------------------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_chromium(path: str | None = None) -> str:
    """``path`` (default :data:`CHROMIUM`) when it is an executable; else fail under CI, skip
    elsewhere."""
    path = path or CHROMIUM
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    reason = f"{path} is missing; run scripts/install-test-deps.sh"
    if in_ci():
        pytest.fail(f"CI is set and {reason}", pytrace=False)
    pytest.skip(reason)


def chromium_command(profile: Path, *args: str, chromium: str | None = None) -> list[str]:
    return [chromium or CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]


def run_chromium(
    profile: Path, *args: str, timeout: float = 60, chromium: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once in its own process group; kill the group on timeout."""
    cmd = chromium_command(profile, *args, chromium=chromium)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"chromium did not finish in {timeout}s: {' '.join(cmd)}\n{err[-3000:]}"
        ) from None
    finally:
        _kill_group(proc.pid)  # renderer or zygote processes left behind, if any
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def dump_dom(url: str, work: Path, budget_ms: int = 15000) -> str:
    """The DOM after the page's scripts ran (``--dump-dom``), with a fresh profile."""
    profile = _fresh(work, "profile-dom")
    result = run_chromium(profile, f"--virtual-time-budget={budget_ms}", "--dump-dom", url)
    assert result.returncode == 0, f"chromium --dump-dom {url} failed:\n{result.stderr[-3000:]}"
    return result.stdout


def dump_dom_until(url: str, work: Path, wanted: list[str], attempts: int = 3) -> str:
    """:func:`dump_dom` until every string of ``wanted`` is in the visible text (an SPA may
    render after its API calls answer); returns the last visible text."""
    text = ""
    for attempt in range(attempts):
        text = visible_text(dump_dom(url, work, budget_ms=15000 * (attempt + 1)))
        if all(w in text for w in wanted):
            return text
    return text


def screenshot(url: str, path: Path, work: Path, size: str = "1280,900") -> None:
    profile = _fresh(work, "profile-shot")
    result = run_chromium(
        profile,
        f"--window-size={size}",
        "--virtual-time-budget=15000",
        f"--screenshot={path}",
        url,
    )
    assert result.returncode == 0, f"chromium --screenshot {url} failed:\n{result.stderr[-3000:]}"


def _fresh(work: Path, name: str) -> Path:
    """A new, empty directory under ``work`` (one profile per Chromium run)."""
    for i in range(1000):
        path = work / f"{name}-{i}"
        if not path.exists():
            path.mkdir(parents=True)
            return path
    raise AssertionError(f"too many {name} directories in {work}")


# --- reading rendered HTML ------------------------------------------------------------------------


def visible_text(dom: str) -> str:
    """The text of an HTML document without scripts and styles, whitespace collapsed."""
    dom = re.sub(r"<(script|style|svg)\b[^>]*>.*?</\1>", " ", dom, flags=re.S | re.I)
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    return re.sub(r"\s+", " ", text).strip()


class _TableParser(HTMLParser):
    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.depth = 0  # > 0 inside the wanted table
        self.section = ""
        self.head: list[str] = []
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and (self.depth or dict(attrs).get("id") == self.table_id):
            self.depth += 1
        if not self.depth:
            return
        if tag in ("thead", "tbody"):
            self.section = tag
        elif tag == "tr" and self.section == "tbody":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if not self.depth:
            return
        if tag == "table":
            self.depth -= 1
        elif tag in ("td", "th") and self.cell is not None:
            text = re.sub(r"\s+", " ", "".join(self.cell)).strip()
            if self.section == "thead":
                self.head.append(text)
            elif self.rows:
                self.rows[-1].append(text)
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def table(dom: str, table_id: str) -> tuple[list[str], list[list[str]]]:
    """The header cells and body rows (lists of cell texts) of ``<table id=table_id>``."""
    parser = _TableParser(table_id)
    parser.feed(dom)
    parser.close()
    return parser.head, parser.rows


def check_png(path: Path) -> tuple[int, int]:
    """Assert ``path`` is a whole, valid PNG; return its size."""
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} does not start with the PNG signature"
    with Image.open(path) as image:
        image.verify()  # checks the chunks' CRCs; the image cannot be used after this
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes every pixel: a truncated file fails here
        return image.size


# --- processes ------------------------------------------------------------------------------------


def lstmbench(*args: str) -> list[str]:
    """The command line of ``lstmbench ARGS`` with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-m", "lstmbench", *args]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dashboard:
    """``lstmbench dashboard`` as a subprocess on a free port; use as a context manager."""

    def __init__(self, url: str, artifacts: Path, cwd: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"dashboard-{self.port}.log"
        self.cmd = lstmbench(
            "dashboard",
            "--storage",
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--artifacts",
            str(artifacts),
        )
        self._cwd, self._env = cwd, env
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Dashboard:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd, cwd=self._cwd, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = 90) -> None:
        """Until ``/dashboard/`` answers 200 (the server imports optuna first: seconds)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"dashboard exited with {self.proc.returncode}:\n{self.output()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base}/dashboard/", timeout=5) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"dashboard not answering after {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# --- the tiny study -------------------------------------------------------------------------------

TINY_VARIANTS = ("cnn", "lstm", "lstm_pos", "lstm_chl")
TINY_TRIALS = 3  # balanced: trial n runs variant n mod 4, so the last variant never runs
TINY_SEEDS = 2


def tiny_toml(name: str, cache_dir: Path) -> str:
    variants = ", ".join(f'"{v}"' for v in TINY_VARIANTS)
    return f"""\
[study]
name = "{name}"
seed = 0

[data]
dataset = "synthetic"
synthetic_train = 400
synthetic_test = 200
limit_train = 300
limit_test = 150
val_fraction = 0.2
cache_dir = "{cache_dir}"

[budget]
epochs = 1
trials = {TINY_TRIALS}

[sampler]
kind = "random"

[search]
balanced = true
variant = [{variants}]
hidden_size = [16]
batch_size = 32
"""


@dataclass(frozen=True)
class TinyStudy:
    root: Path
    name: str
    toml: Path
    db: Path
    url: str
    artifacts: Path
    out: Path  # the first leaderboard's exports
    env: dict[str, str]  # for lstmbench subprocesses: isolated cache, artifacts, no storage
    leaderboard: subprocess.CompletedProcess[str]  # the first `lstmbench leaderboard` run
    leaderboard_seconds: float

    @property
    def unrun(self) -> str:
        return TINY_VARIANTS[-1]


_TINY: TinyStudy | None = None


def tiny_study(factory: pytest.TempPathFactory) -> TinyStudy:
    """Search the tiny study and rank it once; cached for the rest of this test process."""
    global _TINY
    if _TINY is None:
        _TINY = _build_tiny_study(factory.mktemp("tiny-study"))
    return _TINY


def _build_tiny_study(root: Path) -> TinyStudy:
    from lstmbench.space import load_study_file
    from lstmbench.worker import WorkerOptions, run_worker

    name = "tiny-lb"
    toml = root / "tiny.toml"
    toml.write_text(tiny_toml(name, root / "cache"))
    db = root / "study.db"
    url = f"sqlite:///{db}"
    artifacts = root / "artifacts"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTMBENCH_")}
    env.update(LSTMBENCH_CACHE_DIR=str(root / "cache"), LSTMBENCH_ARTIFACTS=str(artifacts))

    report = run_worker(load_study_file(toml), url, WorkerOptions(device="cpu", worker_index=0))
    assert report.ran == TINY_TRIALS, report

    out = root / "leaderboard"
    started = time.perf_counter()
    first = subprocess.run(
        lstmbench("leaderboard", str(toml), "--storage", url, "--seeds", str(TINY_SEEDS),
                  "--out", str(out), "--device", "cpu", "--artifacts", str(artifacts)),
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    assert first.returncode == 0, f"lstmbench leaderboard failed:\n{first.stderr[-5000:]}"
    return TinyStudy(root, name, toml, db, url, artifacts, out, env, first, seconds)
