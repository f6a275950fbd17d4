"""The launcher: N worker processes on this machine, one live progress line, clean shutdown.

Workers are spread round-robin over ``--devices``. A CUDA worker sees only its GPU
(``CUDA_VISIBLE_DEVICES``) and trains on ``cuda:0``; CPU workers split the cores between them
(``LSTMBENCH_THREADS``), since two workers each using every core run slower than one. The storage
URL reaches the workers through the environment, not their command line, so a password in it never
shows in ``ps``. Each worker writes a log file; when one dies abnormally the launcher shows the end
of its log and exits non-zero. Ctrl-C (and SIGTERM) is forwarded to the workers, whose running
trials are then marked failed with the reason ``interrupted``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import optuna

from lstmbench.config import ConfigError, is_device_name
from lstmbench.data import load
from lstmbench.space import StudySpec
from lstmbench.storage import count_trials, ensure_study, mask_url, open_storage
from lstmbench.train import resolve_device

__all__ = ["WorkerProcess", "launch", "parse_devices"]

log = logging.getLogger(__name__)
POLL_SECONDS = 2.0  # progress refresh period of the launcher


def parse_devices(text: str) -> list[str]:
    """``"cuda:0,cuda:1"`` or ``"cpu"`` → a list of devices."""
    devices = [d.strip() for d in text.split(",") if d.strip()]
    for d in devices:
        if d == "auto" or not is_device_name(d):
            raise ConfigError(f"unknown device {d!r} in --devices; use cpu or cuda:N[,cuda:M...]")
    if not devices:
        raise ConfigError("--devices is empty; use cpu or cuda:0,cuda:1,...")
    return devices


@dataclass
class WorkerProcess:
    index: int
    device: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _worker_env(index: int, device: str, cpu_workers: int, url: str) -> tuple[dict[str, str], str]:
    env = dict(
        os.environ, LSTMBENCH_STORAGE=url, LSTMBENCH_WORKER_INDEX=str(index), PYTHONUNBUFFERED="1"
    )
    if device.startswith("cuda"):
        env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1] if ":" in device else "0"
        return env, "cuda:0"
    threads = str(max(1, (os.cpu_count() or 1) // max(cpu_workers, 1)))
    env.update(CUDA_VISIBLE_DEVICES="", LSTMBENCH_THREADS=threads, OMP_NUM_THREADS=threads)
    return env, "cpu"


def launch(
    spec: StudySpec,
    study_path: str,
    url: str,
    workers: int,
    devices: list[str],
    heartbeat_interval: int | None = None,
    log_dir: Path | None = None,
    show_progress: bool = True,
) -> int:
    """Run ``workers`` worker processes until the study holds its target; return an exit code."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    # Devices and data are checked before the storage is opened: bad input must leave nothing
    # behind, not even an empty SQLite file. Loading also decodes once, so workers hit the cache.
    for device in devices:
        resolve_device(device)
    load(spec.data)
    storage = open_storage(url)
    study = ensure_study(spec, storage, url)
    log_dir = log_dir or Path("lstmbench-logs") / spec.name
    log_dir.mkdir(parents=True, exist_ok=True)
    cpu_workers = sum(1 for i in range(workers) if devices[i % len(devices)] == "cpu")

    procs: list[WorkerProcess] = []
    for i in range(workers):
        device = devices[i % len(devices)]
        env, worker_device = _worker_env(i, device, cpu_workers, url)
        cmd = [
            sys.executable,
            "-m",
            "lstmbench",
            "worker",
            study_path,
            "--device",
            worker_device,
            "--worker-index",
            str(i),
        ]
        if heartbeat_interval:
            cmd += ["--heartbeat-interval", str(heartbeat_interval)]
        if spec.data.data_dir:  # keeps a --data-dir override
            cmd += ["--data-dir", spec.data.data_dir]
        log_path = log_dir / f"worker-{i}.log"
        with open(log_path, "ab") as log_file:
            # A session of its own: the launcher decides which signals reach the worker.
            proc = subprocess.Popen(
                cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        procs.append(WorkerProcess(i, device, proc, log_path))
    log.info(
        "started %d worker(s) on %s; logs in %s; storage %s",
        workers,
        ",".join(devices),
        log_dir,
        mask_url(url),
    )

    def forward(signum: int, frame: FrameType | None) -> None:
        for w in procs:
            if w.process.poll() is None:
                w.process.send_signal(signal.SIGINT)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _monitor(study, spec, procs, show_progress)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    failed = [w for w in procs if w.process.returncode != 0]
    for w in failed:
        print(
            f"lstmbench launch: worker {w.index} ({w.device}) exited with code "
            f"{w.process.returncode}; last lines of {w.log_path}:\n{w.tail()}",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _monitor(study: optuna.Study, spec: StudySpec, procs: list[WorkerProcess], show: bool) -> None:
    """Poll the study and the workers until every worker has exited."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    live = show and console.is_terminal
    last_line = ""
    with Progress(*columns, console=console, disable=not live) as bar:
        task = bar.add_task(spec.name, total=spec.target_trials, info="")
        while True:
            alive = [w for w in procs if w.process.poll() is None]
            try:
                counts = count_trials(study)
            except Exception as exc:  # the storage may blink; the workers retry on their own
                log.debug("progress poll failed: %s", exc)
                time.sleep(POLL_SECONDS)
                continue
            best = counts.best
            info = (f"best {best:.4f}" if best is not None else "best –") + (
                f" · running {counts.running} · pruned {counts.pruned} · failed {counts.failed}"
                f" · workers {len(alive)}/{len(procs)}"
            )
            bar.update(task, completed=min(counts.finished, spec.target_trials), info=info)
            line = f"{spec.name}: {counts.finished}/{spec.target_trials} finished · {info}"
            if show and not live and line != last_line:
                print(line, file=sys.stderr, flush=True)  # plain lines for logs and CI
                last_line = line
            if not alive:
                return
            # Every poll reads the whole study; on a small machine it competes with training.
            time.sleep(POLL_SECONDS)
