"""How many concurrent search workers one device takes: trials/minute for k = 1, 2, 4, 8 workers.

For each k it copies the study file with ``[budget] trials = k × --trials-per-worker`` and a name of
its own, launches ``lstmbench launch STUDY --workers k --devices DEVICE`` on a fresh SQLite storage
and, when it ends, reads the trials back. Two rates are printed: *steady* trials/minute, from the
first trial's start to the last trial's completion (worker start-up excluded), and *wall*
trials/minute over the whole launch. The speed-up is the steady rate relative to k = 1.

    python benchmark/gpu_pack.py --study benchmark/gpu-pack.toml --workers 1,2,4,8   # on a GPU
    python benchmark/gpu_pack.py --study studies/demo.toml --devices cpu --workers 1,2 \\
        --trials-per-worker 2   # a CPU smoke test
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState


def _study_copy(source: Path, name: str, trials: int, out: Path) -> Path:
    text = source.read_text()
    text = re.sub(r"(?m)^name = .*$", f'name = "{name}"', text, count=1)
    text = re.sub(r"(?m)^trials = \d+", f"trials = {trials}", text, count=1)
    path = out / f"{name}.toml"
    path.write_text(text)
    return path


def run_one(study: Path, k: int, per_worker: int, device: str, out: Path, limit: float) -> dict:
    name = f"pack-k{k}-{int(time.time())}"
    storage = f"sqlite:///{(out / f'{name}.db').resolve()}"
    path = _study_copy(study, name, k * per_worker, out)
    cmd = [
        sys.executable,
        "-m",
        "lstmbench",
        "launch",
        str(path),
        "--workers",
        str(k),
        "--devices",
        device,
        "--storage",
        storage,
        "--quiet",
        "--log-dir",
        str(out / "logs" / name),
    ]
    started = time.perf_counter()
    try:
        code = subprocess.run(cmd, capture_output=True, text=True, timeout=limit).returncode
    except subprocess.TimeoutExpired:
        code = -1
    wall = time.perf_counter() - started
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    row = {
        "workers": k,
        "trials": len(done),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "wall_s": round(wall, 1),
        "exit_code": code,
    }
    if done:
        first = min(t.datetime_start for t in done if t.datetime_start)
        last = max(t.datetime_complete for t in done if t.datetime_complete)
        steady = (last - first).total_seconds()
        row["steady_s"] = round(steady, 1)
        row["steady_trials_per_min"] = round(60 * len(done) / steady, 2) if steady > 0 else None
        row["wall_trials_per_min"] = round(60 * len(done) / wall, 2)
        row["mean_trial_s"] = round(
            sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done) / len(done),
            2,
        )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("benchmark/gpu-pack.toml"))
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated k values")
    parser.add_argument("--trials-per-worker", type=int, default=3)
    parser.add_argument("--devices", default="cuda:0", help="the one device all workers share")
    parser.add_argument("--time-limit", type=float, default=240, help="seconds for all k together")
    parser.add_argument("--out", type=Path, default=Path("gpu-bench"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ks = [int(k) for k in args.workers.split(",")]
    print(f"# {' '.join(sys.argv)}")
    print(
        f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} · device "
        f"{args.devices} · study {args.study}"
    )
    deadline = time.perf_counter() + args.time_limit
    rows = []
    for k in ks:
        remaining = deadline - time.perf_counter()
        if remaining < 20:
            print(f"k={k}: skipped, the time limit is spent")
            continue
        rows.append(
            run_one(args.study, k, args.trials_per_worker, args.devices, args.out, remaining)
        )
        print(json.dumps(rows[-1]), flush=True)
    base = next((r.get("steady_trials_per_min") for r in rows if r["workers"] == 1), None)
    print(
        f"\n{'k':>3} {'trials':>6} {'failed':>6} {'steady/min':>10} {'wall/min':>9} "
        f"{'trial s':>8} {'speed-up':>8}"
    )
    for r in rows:
        steady = r.get("steady_trials_per_min")
        speedup = f"{steady / base:.2f}" if base and steady else "–"
        print(
            f"{r['workers']:>3} {r['trials']:>6} {r['failed']:>6} {steady or '–':>10} "
            f"{r.get('wall_trials_per_min', '–'):>9} {r.get('mean_trial_s', '–'):>8} "
            f"{speedup:>8}"
        )
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
