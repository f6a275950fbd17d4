"""Terminal rendering of training and reproduction results (rich tables on stdout)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["console", "fmt", "print_reproduce_table", "print_train_summary"]


def console(stderr: bool = False) -> Console:
    """A console for tables: the terminal's width, or wide enough for a table when piped."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=160)


def fmt(value: float | None, digits: int = 4) -> str:
    """A metric for a table cell; missing values show as an en dash."""
    return "–" if value is None else f"{value:.{digits}f}"


def print_train_summary(summary: dict[str, Any], sizes: dict[str, int]) -> None:
    cfg = summary["config"]
    table = Table(
        title=f"lstmbench train · {summary['variant']} on {summary['dataset']}",
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("split sizes", f"train {sizes['train']} · val {sizes['val']} · test {sizes['test']}"),
        ("layout / hidden", f"{summary['layout']} / {cfg['model']['hidden_size']}"),
        ("epochs · batch · lr", f"{summary['epochs']} · {cfg['batch_size']} · {cfg['lr']:g}"),
        (
            "val accuracy · macro-F1",
            f"{fmt(summary['val_accuracy'])} · {fmt(summary['val_macro_f1'])}",
        ),
        (
            "test accuracy · macro-F1",
            f"{fmt(summary['test_accuracy'])} · {fmt(summary['test_macro_f1'])}",
        ),
        ("parameters", f"{summary['params']:,}"),
        ("train time", f"{summary['train_seconds']:.1f} s on {summary['device']}"),
        ("throughput", f"{summary['samples_per_second']:,.0f} samples/s"),
        ("loss curve", " ".join(f"{v:.3f}" for v in summary["loss_curve"])),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console().print(table)


def print_reproduce_table(
    summaries: list[dict[str, Any]],
    published: dict[str, dict[str, float]],
    dataset: str,
    sizes: dict[str, int],
    keep_seed_bugs: bool,
) -> None:
    epochs = summaries[0]["epochs"] if summaries else 0
    precisions = "/".join(sorted({s["precision"] for s in summaries})) or "–"
    table = Table(
        title=f"Seed study reproduced on {dataset} · {epochs} epoch(s) · {precisions} · "
        f"train {sizes['train']} / test {sizes['test']} images",
        title_justify="left",
    )
    for col in (
        "variant",
        "train acc",
        "test acc",
        "macro-F1",
        "seed acc",
        "seed F1",
        "Δ acc",
        "params",
        "s/epoch",
    ):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for s in summaries:
        ref = published.get(s["variant"], {})
        seed_acc = ref.get("test_accuracy")
        delta = None if seed_acc is None else s["test_accuracy"] - seed_acc
        table.add_row(
            s["variant"],
            fmt(s["train_accuracy"]),
            fmt(s["test_accuracy"]),
            fmt(s["test_macro_f1"]),
            fmt(seed_acc),
            fmt(ref.get("test_macro_f1")),
            "–" if delta is None else f"{delta:+.4f}",
            f"{s['params']:,}",
            f"{s['train_seconds'] / max(s['epochs'], 1):.1f}",
        )
    out = console()
    out.print(table)
    notes = ["seed columns: the seed study's published single runs (10 epochs, full data)."]
    if not published:
        notes = ["the seed did not use this dataset, so there are no published figures beside it."]
    if keep_seed_bugs:
        notes.append("cnn keeps the seed's test-time dropout (--fix-seed-bugs turns it off).")
    if dataset == "flowers102":
        notes.append("the seed trained flowers102 with 1000 outputs; this run uses 102.")
    for note in notes:
        out.print(f"[dim]· {note}[/dim]")


def print_status(study: Any, variants: list[Any], url: str) -> None:
    """Trial counts by state and by variant, and the best trial so far."""
    from lstmbench.storage import count_trials, mask_url

    counts = count_trials(study)
    out = console()
    out.print(
        f"[bold]{study.study_name}[/bold] in {mask_url(url)} · "
        f"{counts.complete} complete · {counts.pruned} pruned · {counts.running} running · "
        f"{counts.waiting} waiting · {counts.failed} failed"
    )
    states = ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL")
    table = Table(title_justify="left")
    table.add_column("variant")
    for s in states:
        table.add_column(s.lower(), justify="right")
    table.add_column("best val acc", justify="right")
    table.add_column("trial", justify="right")
    for v in variants:
        table.add_row(
            v.variant,
            *(str(v.counts.get(s, 0)) for s in states),
            fmt(v.best_value),
            "–" if v.best_trial is None else str(v.best_trial),
        )
    out.print(table)
    try:
        best = study.best_trial
    except ValueError:
        out.print("no completed trial yet")
        return
    params = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()
    )
    out.print(f"best: trial {best.number} · val acc {best.value:.4f} · {params}")
