"""Search throughput: trials per hour of the demo study with 1 and with 2 workers.

For each worker count (``--workers``, default 1,2) this runs, as a subprocess::

    lstmbench launch <study> --workers N --storage sqlite:///<tmp>/search-<N>-<r>.db \\
        --log-dir <tmp>/logs-<N>-<r> --quiet

on a fresh SQLite file, where ``<study>`` is the packaged demo study
(``src/lstmbench/studies/demo.toml``: synthetic data, every variant, 3 epochs, TPE, median pruner,
22 trials) or, with ``--trials T``, a copy of it in the temporary folder whose ``[budget] trials``
is T. It times the whole command (process start to exit: imports, the launcher's data check,
worker start-up, the trials and the shutdown), then reads the storage:

* ``finished``: COMPLETE + PRUNED trials (the launcher's target), and how many are COMPLETE,
  PRUNED and FAIL (``surplus`` failures, trials created past the target by racing workers, are
  counted apart); RUNNING or WAITING trials left behind are an error;
* ``trials/h``: finished / wall seconds x 3600; ``pruned``: PRUNED / (COMPLETE + PRUNED);
* ``first trial s``: from starting the command to the first trial's start (start-up cost);
* ``busy workers``: the trials' summed durations / (workers x wall seconds): how much of the
  wall time the workers spent inside trials rather than starting, polling or waiting;
* ``busy``/``others``: the whole machine's CPU use while the command ran, and the part of it not
  used by the command's process tree (other people's load; all cores = 100%).

The table gives one row per launch (``--repeats`` per worker count) and, when both 1 and 2 workers
ran, the speed-up of the median trials/h. On a 2-core CPU, 2 workers each get one core
(``LSTMBENCH_THREADS=1``) where 1 worker gets both, so the speed-up is well under 2.

Run it from the repository root with the project's virtual environment::

    . .venv/bin/activate
    python benchmark/search_scaling.py               # full demo, 1 and 2 workers (~3-4 minutes)
    python benchmark/search_scaling.py --trials 11   # a shorter study
    python benchmark/search_scaling.py --json        # a JSON list on stdout, the rest on stderr
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

from _common import (
    CpuMeter,
    add_idle_args,
    header_lines,
    parse_counts,
    progress,
    report_stream,
    table,
    wait_idle,
)


def demo_study(tmp: Path, trials: int | None) -> Path:
    """The packaged demo study file, or a copy of it in ``tmp`` with ``trials`` as its target."""
    source = resources.files("lstmbench") / "studies" / "demo.toml"
    if trials is None:
        with resources.as_file(source) as p:
            if Path(p).is_file():
                return Path(p)
    text = source.read_text()
    if trials is not None:
        pattern = re.compile(r"(\[budget\][^\[]*?^trials\s*=\s*)\d+", re.MULTILINE | re.DOTALL)
        text, n = pattern.subn(lambda m: f"{m.group(1)}{trials}", text)
        if n != 1:
            raise SystemExit("could not find [budget] trials in the demo study file")
    path = tmp / ("demo.toml" if trials is None else f"demo-{trials}.toml")
    path.write_text(text)
    return path


def lstmbench_command() -> list[str]:
    """The ``lstmbench`` console script next to this interpreter (else ``python -m lstmbench``)."""
    script = Path(sys.executable).parent / "lstmbench"
    if script.is_file():
        return [str(script)]
    found = shutil.which("lstmbench")
    return [found] if found else [sys.executable, "-m", "lstmbench"]


def storage_summary(url: str) -> dict[str, Any]:
    import optuna
    from optuna.trial import TrialState

    from lstmbench.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, must_exist=True)
    try:
        (summary,) = optuna.get_all_study_summaries(storage)
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()  # type: ignore[attr-defined]
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    surplus = sum(
        1
        for t in by_state[TrialState.FAIL]
        if str(t.user_attrs.get("fail_reason", "")).startswith("surplus")
    )
    durations = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.datetime_start and t.datetime_complete
    ]
    starts = [t.datetime_start for t in trials if t.datetime_start]
    train = [float(t.user_attrs.get("train_seconds", 0.0)) for t in trials]
    return {
        "complete": len(by_state[TrialState.COMPLETE]),
        "pruned": len(by_state[TrialState.PRUNED]),
        "failed": len(by_state[TrialState.FAIL]) - surplus,
        "surplus": surplus,
        "left_running": len(by_state[TrialState.RUNNING]) + len(by_state[TrialState.WAITING]),
        "trial_seconds": sum(durations),
        "train_seconds": sum(train),
        "first_start": min(starts).timestamp() if starts else None,
    }


def launch_once(study: Path, workers: int, tmp: Path, tag: str, timeout: float) -> dict[str, Any]:
    db = tmp / f"search-{tag}.db"
    url = f"sqlite:///{db}"
    cmd = [
        *lstmbench_command(),
        "launch",
        str(study),
        "--workers",
        str(workers),
        "--storage",
        url,
        "--log-dir",
        str(tmp / f"logs-{tag}"),
        "--quiet",
    ]
    env = {k: v for k, v in os.environ.items() if k != "LSTMBENCH_STORAGE"}
    progress(f"$ {' '.join(cmd)}")
    log = tmp / f"launch-{tag}.log"
    meter = CpuMeter().start()
    started_at = time.time()
    start = time.perf_counter()
    with open(log, "wb") as f:
        try:
            proc = subprocess.run(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False
            )
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    wall = time.perf_counter() - start
    busy, others = meter.read()  # the command and its workers have been waited for by now
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        progress(f"launch exited with {code}; last lines of {log}:\n{tail}")
    s = storage_summary(url) if db.is_file() else {}
    finished = s.get("complete", 0) + s.get("pruned", 0)
    return {
        "workers": workers,
        "command": " ".join(cmd),
        "exit_code": code,
        "wall_s": round(wall, 1),
        "finished": finished,
        "complete": s.get("complete", 0),
        "pruned": s.get("pruned", 0),
        "failed": s.get("failed", 0),
        "surplus": s.get("surplus", 0),
        "left_running": s.get("left_running", 0),
        "trials_per_hour": round(finished / wall * 3600, 1) if wall > 0 else None,
        "pruned_fraction": round(s["pruned"] / finished, 3) if finished else None,
        "first_trial_s": round(s["first_start"] - started_at, 1) if s.get("first_start") else None,
        "worker_busy": round(s.get("trial_seconds", 0.0) / (workers * wall), 2) if wall else None,
        "train_seconds": round(s.get("train_seconds", 0.0), 1),
        "cpu_busy": round(busy, 2),
        "cpu_others": round(others, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="a JSON list on stdout, the rest on stderr")
    p.add_argument("--workers", default="1,2", metavar="LIST")
    p.add_argument("--trials", type=int, metavar="T", help="a copy of the demo with T trials")
    p.add_argument("--repeats", type=int, default=1, metavar="R", help="launches per count")
    p.add_argument("--timeout", type=float, default=1800.0, metavar="S", help="per launch")
    p.add_argument("--tmp", metavar="DIR", help="parent of the temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, dbs)")
    add_idle_args(p, "each launch")
    args = p.parse_args(argv)
    counts = parse_counts(p, args.workers, "1,2")
    if args.repeats < 1:
        p.error("--repeats must be positive")
    if args.trials is not None and args.trials < 1:
        p.error("--trials must be positive")

    out = report_stream(args.json)
    warnings.simplefilter("ignore")  # Optuna's experimental warnings when reading the storage
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="lstmbench_bench_", dir=args.tmp))
        if not args.keep:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        study = demo_study(tmp, args.trials)
        print("\n".join(header_lines([f"study file: {study}; temporary folder: {tmp}"])), file=out)
        print(
            f"launch: {' '.join(lstmbench_command())} launch {study} --workers N "
            f"--storage sqlite:///{tmp}/search-N-R.db --log-dir {tmp}/logs-N-R --quiet",
            file=out,
            flush=True,
        )
        for rep in range(args.repeats):
            for w in counts if rep % 2 == 0 else counts[::-1]:
                if args.wait_idle > 0:
                    wait_idle(args.wait_idle, args.idle_threshold)
                row = launch_once(study, w, tmp, f"{w}-{rep + 1}", args.timeout)
                rows.append(row)
                progress(
                    f"{w} worker(s): {row['finished']} finished in {row['wall_s']} s "
                    f"= {row['trials_per_hour']} trials/h, pruned {row['pruned_fraction']}, "
                    f"exit {row['exit_code']}"
                )
    total = time.perf_counter() - started

    headers = (
        "workers", "wall s", "finished", "complete", "pruned", "failed", "surplus",
        "trials/h", "pruned frac", "first trial s", "busy workers", "busy", "others", "exit",
    )  # fmt: skip
    lines = [
        (
            r["workers"],
            f"{r['wall_s']:.1f}",
            r["finished"],
            r["complete"],
            r["pruned"],
            r["failed"],
            r["surplus"],
            r["trials_per_hour"],
            "-" if r["pruned_fraction"] is None else f"{r['pruned_fraction']:.2f}",
            r["first_trial_s"],
            r["worker_busy"],
            f"{100 * r['cpu_busy']:.0f}%",
            f"{100 * r['cpu_others']:.0f}%",
            r["exit_code"],
        )
        for r in rows
    ]
    print(file=out)
    print(table(headers, lines), file=out)
    medians = {
        w: statistics.median(r["trials_per_hour"] or 0.0 for r in rows if r["workers"] == w)
        for w in counts
    }
    if medians.get(1):
        for w in counts:
            if w != 1:
                print(
                    f"speed-up {w} workers vs 1: {medians[w] / medians[1]:.2f}x "
                    f"(median trials/h {medians[w]:.0f} vs {medians[1]:.0f})",
                    file=out,
                )
    print(f"total time: {total:.1f} s", file=out, flush=True)
    if args.json:
        print(json.dumps(rows))
    bad = any(r["exit_code"] != 0 or r["left_running"] or r["failed"] for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
