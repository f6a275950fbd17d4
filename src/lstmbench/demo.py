"""``lstmbench demo``: the whole product in about two minutes, offline, on embedded SQLite.

It creates the demo study (shipped inside the package), launches workers with live progress,
re-evaluates the best of each variant with seeds on the test split, prints the leaderboard and
where its exports went, and the one command that opens the dashboard.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import optuna

from lstmbench.export import print_leaderboard, publish_to_study, write_exports
from lstmbench.launch import launch
from lstmbench.leaderboard import build_leaderboard
from lstmbench.report import console
from lstmbench.space import load_study_file
from lstmbench.storage import (
    StorageError,
    artifact_dir,
    count_trials,
    ensure_study,
    mask_url,
    open_storage,
    resolve_url,
)

__all__ = ["run_demo"]


def run_demo(
    storage: str | None = None,
    workers: int = 2,
    seeds: int = 2,
    out: str | None = None,
    fresh: bool = False,
) -> int:
    url = resolve_url(storage, None)
    out_dir = Path(out or "leaderboard/demo")
    say = console(stderr=False)
    started = time.perf_counter()
    with resources.as_file(resources.files("lstmbench") / "studies" / "demo.toml") as path:
        spec = load_study_file(path)
        say.rule("[bold]lstmbench demo")
        say.print(
            "Do positional and channel embeddings make an LSTM a competitive image classifier, "
            f"next to a CNN? A tiny search on synthetic images: {len(spec.variants)} variants, "
            f"{spec.target_trials} trials ({spec.target_trials // len(spec.variants)} each), "
            f"{spec.epochs} epochs, {workers} workers on the CPU.\n"
        )
        db = open_storage(url)
        if fresh and spec.name in {s.study_name for s in optuna.get_all_study_summaries(db)}:
            optuna.delete_study(study_name=spec.name, storage=db)
        try:
            study = ensure_study(spec, db, url)
        except StorageError as exc:
            raise StorageError(f"{exc}; or run `lstmbench demo --fresh` to start over") from None
        counts = count_trials(study)
        say.print(f"[bold]1/4[/bold] study [cyan]{spec.name}[/cyan] in {mask_url(url)} "
                  f"({counts.finished}/{spec.target_trials} trials already finished)")  # fmt: skip
        say.print(f"[bold]2/4[/bold] searching with {workers} workers "
                  f"(logs in lstmbench-logs/{spec.name}/)")  # fmt: skip
        code = launch(spec, str(path), url, workers, ["cpu"])
        if code != 0:
            return code
    say.print(f"[bold]3/4[/bold] re-training the best of each variant with {seeds} seeds, "
              "scoring on the test split")  # fmt: skip
    board = build_leaderboard(study, spec, seeds=seeds, device="cpu", jobs=workers)
    written = write_exports(board, study, out_dir)
    publish_to_study(study, board, written.get("png", []), artifact_dir())
    print_leaderboard(board)
    say.print("\nExports: " + ", ".join(str(p) for paths in written.values() for p in paths))
    say.print(f"[bold]4/4[/bold] done in {time.perf_counter() - started:.0f} s. "
              "Open the dashboard (leaderboard note and plots included):")  # fmt: skip
    # The storage is printed in full only when it holds no password: a masked URL would not work.
    flag = ""
    if storage:
        flag = f" --storage {url}" if mask_url(url) == url else " --storage <your URL>"
    say.print(f"\n    [bold]lstmbench dashboard{flag}[/bold]   → http://127.0.0.1:8080/\n")
    return 0
