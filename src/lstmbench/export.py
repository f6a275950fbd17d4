"""Leaderboard exports: terminal table, CSV, JSON, Markdown, self-contained HTML and PNG plots,
and publishing into the study (an optuna-dashboard note and the plots as artifacts)."""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import itertools
import json
import logging
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from lstmbench.leaderboard import Leaderboard, Row
from lstmbench.report import console, fmt

__all__ = ["FORMATS", "markdown_table", "print_leaderboard", "publish_to_study", "write_exports"]

log = logging.getLogger(__name__)

FORMATS = ("csv", "json", "md", "html", "png")
COLUMNS = ("rank", "variant", "best config", "trials", "val acc", "test acc (95% CI)",
           "macro-F1 (95% CI)", "Δ vs cnn", "Δ vs lstm", "p vs cnn", "p vs lstm", "params",
           "train s", "samples/s")  # fmt: skip


def _ci(interval: Any, digits: int = 4) -> str:
    if interval is None:
        return "–"
    if math.isnan(interval.lower):
        return f"{interval.mean:.{digits}f} (n={interval.n})"
    half = (interval.upper - interval.lower) / 2
    return f"{interval.mean:.{digits}f} ± {half:.{digits}f}"


def _delta(result: Any) -> str:
    if result is None:
        return "–"
    return f"{result.delta:+.4f} [{result.lower:+.4f}, {result.upper:+.4f}]"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _cells(row: Row) -> list[str]:
    return [
        "–" if row.rank is None else str(row.rank),
        row.variant,
        row.compact if row.config else row.note,
        str(row.trials),
        fmt(row.val_accuracy),
        _ci(row.accuracy) if row.accuracy else row.note or "–",
        _ci(row.macro_f1),
        "ref" if row.variant == "cnn" and row.runs else _delta(row.vs_cnn),
        "ref" if row.variant == "lstm" and row.runs else _delta(row.vs_lstm),
        _p(row.p_vs_cnn),
        _p(row.p_vs_lstm),
        "–" if row.params is None else f"{row.params:,}",
        "–" if row.train_seconds is None else f"{row.train_seconds:.1f}",
        "–" if row.samples_per_second is None else f"{row.samples_per_second:,.0f}",
    ]


def _has_seed_figures(board: Leaderboard) -> bool:
    return any(r.seed_published for r in board.rows)


def _seed_cell(row: Row) -> str:
    ref = row.seed_published or {}
    if "test_accuracy" not in ref:
        return "–"
    return f"{ref['test_accuracy']:.4f} / {ref.get('test_macro_f1', math.nan):.4f}"


def _header_lines(board: Leaderboard) -> list[str]:
    return [
        f"Study `{board.study}` on {board.dataset}: the best trial of each variant (by validation "
        f"accuracy), re-trained with {board.seeds} seed(s) and scored on {board.test_examples} "
        f"test images. Generated {board.generated}.",
        f"Intervals: {board.confidence:.0%} {board.interval}. Δ: accuracy difference, "
        f"{board.comparison}.",
    ]


def markdown_table(board: Leaderboard) -> str:
    cols = list(COLUMNS) + (["seed study acc / F1"] if _has_seed_figures(board) else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in board.rows:
        cells = _cells(row) + ([_seed_cell(row)] if _has_seed_figures(board) else [])
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _markdown(board: Leaderboard) -> str:
    return "\n".join(
        [f"# Leaderboard: {board.study}", "", *_header_lines(board), "", markdown_table(board), ""]
    )


def print_leaderboard(board: Leaderboard) -> None:
    """A terminal-width table; the chosen configurations follow it, one line each."""
    from rich.table import Table

    table = Table(title=f"Leaderboard · {board.study} · {board.dataset}", title_justify="left")
    cols = ["#", "variant", "trials", "val acc", "test acc ± CI", "macro-F1 ± CI", "Δ vs cnn",
            "p", "Δ vs lstm", "p", "params", "s/run", "samples/s"]  # fmt: skip
    if _has_seed_figures(board):
        cols.append("seed acc")
    for col in cols:
        table.add_column(col, justify="left" if col == "variant" else "right")
    for row in board.rows:
        style = "bold green" if row.rank == 1 else ("dim" if row.rank is None else None)
        cells = [
            "–" if row.rank is None else str(row.rank),
            row.variant,
            str(row.trials),
            fmt(row.val_accuracy, 3),
            _ci(row.accuracy, 3) if row.accuracy else (row.note or "–"),
            _ci(row.macro_f1, 3),
            "ref" if row.variant == "cnn" and row.runs else _short_delta(row.vs_cnn),
            _p(row.p_vs_cnn),
            "ref" if row.variant == "lstm" and row.runs else _short_delta(row.vs_lstm),
            _p(row.p_vs_lstm),
            "–" if row.params is None else f"{row.params / 1000:,.0f}k",
            "–" if row.train_seconds is None else f"{row.train_seconds:.1f}",
            "–" if row.samples_per_second is None else f"{row.samples_per_second:,.0f}",
        ]
        if _has_seed_figures(board):
            cells.append(fmt((row.seed_published or {}).get("test_accuracy"), 3))
        table.add_row(*cells, style=style)
    out = console()
    out.print(table)
    for row in board.rows:
        if row.config:
            out.print(f"  [bold]{row.variant}[/bold] (trial {row.best_trial}): {row.compact}")
    for line in _header_lines(board):
        out.print(f"[dim]{line}[/dim]")


def _short_delta(result: Any) -> str:
    if result is None:
        return "–"
    return f"{result.delta:+.3f} ±{(result.upper - result.lower) / 2:.3f}"


# --- files ----------------------------------------------------------------------------------------


def _write_csv(board: Leaderboard, path: Path) -> None:
    fields = ["rank", "variant", "trials", "best_trial", "val_accuracy", "test_acc_mean",
              "test_acc_std", "test_acc_ci_low", "test_acc_ci_high", "macro_f1_mean",
              "macro_f1_std", "macro_f1_ci_low", "macro_f1_ci_high", "delta_vs_cnn",
              "delta_vs_cnn_ci_low", "delta_vs_cnn_ci_high", "p_vs_cnn_holm", "delta_vs_lstm",
              "delta_vs_lstm_ci_low", "delta_vs_lstm_ci_high", "p_vs_lstm_holm", "params",
              "train_seconds", "samples_per_second", "seeds", "config", "note"]  # fmt: skip
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in board.to_dict()["rows"]:
            acc, f1 = r["test_accuracy"] or {}, r["test_macro_f1"] or {}
            vc, vl = r["delta_vs_cnn"] or {}, r["delta_vs_lstm"] or {}
            writer.writerow(
                {
                    "rank": r["rank"],
                    "variant": r["variant"],
                    "trials": r["trials"],
                    "best_trial": r["best_trial"],
                    "val_accuracy": r["val_accuracy"],
                    "test_acc_mean": acc.get("mean"),
                    "test_acc_std": acc.get("std"),
                    "test_acc_ci_low": acc.get("lower"),
                    "test_acc_ci_high": acc.get("upper"),
                    "macro_f1_mean": f1.get("mean"),
                    "macro_f1_std": f1.get("std"),
                    "macro_f1_ci_low": f1.get("lower"),
                    "macro_f1_ci_high": f1.get("upper"),
                    "delta_vs_cnn": vc.get("delta"),
                    "delta_vs_cnn_ci_low": vc.get("lower"),
                    "delta_vs_cnn_ci_high": vc.get("upper"),
                    "p_vs_cnn_holm": r["p_vs_cnn_holm"],
                    "delta_vs_lstm": vl.get("delta"),
                    "delta_vs_lstm_ci_low": vl.get("lower"),
                    "delta_vs_lstm_ci_high": vl.get("upper"),
                    "p_vs_lstm_holm": r["p_vs_lstm_holm"],
                    "params": r["params"],
                    "train_seconds": r["train_seconds"],
                    "samples_per_second": r["samples_per_second"],
                    "seeds": len(r["runs"]),
                    "config": json.dumps(r["config"]) if r["config"] else "",
                    "note": r["note"],
                }
            )


def _plot_scores(board: Leaderboard, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = board.rows
    names = [r.variant for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 1.6), sharey=True)
    for ax, attr, title in ((axes[0], "accuracy", "test accuracy"),
                            (axes[1], "macro_f1", "test macro-F1")):  # fmt: skip
        means, errs, colours = [], [[], []], []
        for r in rows:
            iv = getattr(r, attr)
            mean = iv.mean if iv else math.nan
            means.append(mean)
            ok = iv is not None and not math.isnan(iv.lower)
            errs[0].append(mean - iv.lower if ok else 0)
            errs[1].append(iv.upper - mean if ok else 0)
            colours.append("#c0504d" if r.variant == "cnn" else "#4f81bd")
        y = range(len(rows))
        ax.barh(y, means, xerr=errs, color=colours, capsize=3, alpha=0.9)
        for yi, r in zip(y, rows, strict=True):
            if getattr(r, attr) is None:
                ax.text(0.005, yi, r.note or "no result", va="center", fontsize=8, color="#666")
        ax.set_title(f"{title} (mean ± {board.confidence:.0%} CI, {board.seeds} seeds)")
        ax.set_xlim(0, 1)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), names)
    axes[0].invert_yaxis()
    fig.suptitle(f"{board.study} · {board.dataset}", x=0.01, ha="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_history(study: optuna.Study, board: Leaderboard, path: Path) -> None:
    """Best validation accuracy so far, against the number of trials each variant has had."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(10, 5))
    colours = plt.get_cmap("tab20").colors
    trials = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    for i, row in enumerate(board.rows):
        values = [t.value for t in sorted(trials, key=lambda t: t.number)
                  if _trial_variant(t) == row.variant and t.value is not None]  # fmt: skip
        if not values:
            continue
        best = list(itertools.accumulate(values, max))
        ax.step(range(1, len(best) + 1), best, where="post", marker="o", ms=3,
                lw=2.6 if row.variant == "cnn" else 1.3, color=colours[i % len(colours)],
                label=row.variant)  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials come in whole numbers
    ax.set_xlabel("completed trials of the variant")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title(f"Optimisation history per variant · {board.study}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _trial_variant(trial: optuna.trial.FrozenTrial) -> str | None:
    return trial.params.get("variant") or trial.user_attrs.get("variant")


def _html(board: Leaderboard, images: list[Path]) -> str:
    cols = list(COLUMNS) + (["seed study acc / F1"] if _has_seed_figures(board) else [])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for row in board.rows:
        cells = _cells(row) + ([_seed_cell(row)] if _has_seed_figures(board) else [])
        cls = ' class="best"' if row.rank == 1 else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    figures = "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"></figure>'
        for p in images
        if p.exists()
    )
    notes = "".join(f"<p class=note>{html.escape(line)}</p>" for line in _header_lines(board))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>lstmbench leaderboard · {html.escape(board.study)}</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#222}}
table{{border-collapse:collapse;margin:1rem 0}}
th,td{{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:right;white-space:nowrap}}
th{{background:#f3f5f8}} td:nth-child(2),td:nth-child(3){{text-align:left}}
td:nth-child(3){{white-space:normal;max-width:26rem;font-size:12px}}
tr.best{{background:#eef8ee;font-weight:600}} .note{{color:#555;margin:.2rem 0}}
figure{{margin:1.5rem 0}} img{{max-width:100%}}
</style></head><body>
<h1>Leaderboard · {html.escape(board.study)}</h1>
{notes}
<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
{figures}
</body></html>
"""


def write_exports(
    board: Leaderboard, study: optuna.Study, out_dir: Path, formats: tuple[str, ...] = FORMATS
) -> dict[str, list[Path]]:
    """Write the requested formats into ``out_dir``; return the paths per format."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    pngs = [out_dir / "leaderboard.png", out_dir / "history.png"]
    if "png" in formats or "html" in formats:
        _plot_scores(board, pngs[0])
        _plot_history(study, board, pngs[1])
        if "png" in formats:
            written["png"] = pngs
    if "csv" in formats:
        _write_csv(board, out_dir / "leaderboard.csv")
        written["csv"] = [out_dir / "leaderboard.csv"]
    if "json" in formats:
        (out_dir / "leaderboard.json").write_text(json.dumps(board.to_dict(), indent=2) + "\n")
        written["json"] = [out_dir / "leaderboard.json"]
    if "md" in formats:
        (out_dir / "leaderboard.md").write_text(_markdown(board))
        written["md"] = [out_dir / "leaderboard.md"]
    if "html" in formats:
        (out_dir / "leaderboard.html").write_text(_html(board, pngs))
        written["html"] = [out_dir / "leaderboard.html"]
        if "png" not in formats:
            for p in pngs:
                p.unlink(missing_ok=True)
    return written


def publish_to_study(study: optuna.Study, board: Leaderboard, pngs: list[Path],
                     artifact_dir: Path) -> None:  # fmt: skip
    """Save the leaderboard as the study's dashboard note and the plots as study artifacts.

    An artifact is uploaded only when its content changed since the last upload, so running the
    leaderboard again does not pile up copies.
    """
    import optuna_dashboard
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    note = "\n".join(["## lstmbench leaderboard", "", *_header_lines(board), "",
                      markdown_table(board)])  # fmt: skip
    optuna_dashboard.save_note(study, note)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifact_dir))
    attrs = study._storage.get_study_system_attrs(study._study_id)
    for png in pngs:
        if not png.exists():
            continue
        digest = hashlib.sha256(png.read_bytes()).hexdigest()
        key = f"lstmbench:artifact:{png.name}"
        if attrs.get(key) == digest:
            continue
        upload_artifact(artifact_store=store, file_path=str(png), study_or_trial=study,
                        mimetype="image/png")  # fmt: skip
        study._storage.set_study_system_attr(study._study_id, key, digest)
