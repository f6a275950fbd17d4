"""``lstmbench leaderboard`` end to end on a tiny synthetic study, and its exports.

The study (tests/browser.py: :func:`tiny_study`) has four variants and three trials; the sampler
is balanced, so trial ``n`` runs variant ``n mod 4`` and ``lstm_chl`` never gets a trial. It is
searched in-process and then ranked once by the real command in a subprocess with two seeds; the
tests below read that run's exports, and re-run the command in-process where they need to watch
it (no re-training, error handling).
"""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from browser import (
    PNG_SIGNATURE,
    TINY_SEEDS,
    TINY_TRIALS,
    TINY_VARIANTS,
    TinyStudy,
    check_png,
    lstmbench,
    table,
    tiny_study,
)
from lstmbench import cli
from lstmbench import leaderboard as leaderboard_module
from lstmbench.leaderboard import EVAL_ATTR, EVAL_SEED_BASE
from lstmbench.stats import holm

RAN = TINY_VARIANTS[:TINY_TRIALS]  # the variants that got a trial
FORMAT_FILES = {
    "csv": ["leaderboard.csv"],
    "json": ["leaderboard.json"],
    "md": ["leaderboard.md"],
    "html": ["leaderboard.html"],
    "png": ["leaderboard.png", "history.png"],
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> TinyStudy:
    return tiny_study(tmp_path_factory)


@pytest.fixture(scope="module")
def board(study: TinyStudy) -> dict[str, Any]:
    return _strict_json(study.out / "leaderboard.json")


def _strict_json(path: Path) -> dict[str, Any]:
    """json.load that refuses NaN and Infinity, which are not JSON."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{path} contains {name}, which is not JSON")

    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def _rows(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["variant"]: r for r in board["rows"]}


def _optuna_study(study: TinyStudy) -> optuna.Study:
    return optuna.load_study(study_name=study.name, storage=study.url)


def _run_in_process(study: TinyStudy, out: Path, *extra: str) -> int:
    return cli.main(
        ["leaderboard", str(study.toml), "--storage", study.url, "--out", str(out),
         "--device", "cpu", "--artifacts", str(study.artifacts), *extra]
    )  # fmt: skip


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replace the re-training step by a spy that records calls and refuses to train."""
    calls: list[Any] = []

    def spy(config_dict: dict[str, Any], threads: int | None) -> dict[str, Any]:
        calls.append(config_dict)
        raise AssertionError("the leaderboard re-trained although the study caches every run")

    monkeypatch.setattr(leaderboard_module, "_retrain_one", spy)
    return calls


# --- the first run and its rows -------------------------------------------------------------------


def test_command_succeeds_and_lists_exports(study: TinyStudy) -> None:
    out = study.leaderboard.stdout
    for name, files in FORMAT_FILES.items():
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(f"{name}:")), None)
        assert line is not None, f"no '{name}:' line in the output:\n{out}"
        for file in files:
            assert str(study.out / file) in line
            assert (study.out / file).stat().st_size > 0
    assert "Traceback" not in study.leaderboard.stderr


def test_every_variant_has_a_row(board: dict[str, Any], study: TinyStudy) -> None:
    assert board["study"] == study.name
    assert board["dataset"] == "synthetic"
    assert board["seeds"] == TINY_SEEDS
    assert board["test_examples"] == 150  # limit_test
    variants = [r["variant"] for r in board["rows"]]
    assert sorted(variants) == sorted(TINY_VARIANTS)  # each exactly once


def test_variant_without_trials_has_a_row_saying_so(board: dict[str, Any], study: TinyStudy):
    row = _rows(board)[study.unrun]
    assert row["note"] == "no finished trial"
    assert row["trials"] == 0
    assert row["rank"] is None and row["best_trial"] is None and row["config"] is None
    assert row["test_accuracy"] is None and row["test_macro_f1"] is None
    assert row["runs"] == []
    assert board["rows"][-1]["variant"] == study.unrun  # unranked rows come last


def test_ranked_rows(board: dict[str, Any]) -> None:
    ranked = [r for r in board["rows"] if r["rank"] is not None]
    assert sorted(r["variant"] for r in ranked) == sorted(RAN)
    assert [r["rank"] for r in ranked] == list(range(1, len(RAN) + 1))
    means = [r["test_accuracy"]["mean"] for r in ranked]
    assert means == sorted(means, reverse=True)
    for r in ranked:
        assert r["trials"] == 1 and r["note"] == ""
        assert r["best_trial"] == TINY_VARIANTS.index(r["variant"])  # trial n ran variant n mod 4
        assert r["config"]["model"]["variant"] == r["variant"]
        assert 0.0 <= r["val_accuracy"] <= 1.0


def test_intervals_are_numbers_that_bracket_the_mean(board: dict[str, Any]) -> None:
    for r in board["rows"]:
        if r["variant"] not in RAN:
            continue
        runs = r["runs"]
        assert [run["seed"] for run in runs] == [EVAL_SEED_BASE + s for s in range(TINY_SEEDS)]
        for key, field in (("test_accuracy", "test_accuracy"), ("test_macro_f1", "test_macro_f1")):
            iv = r[key]
            values = [run[field] for run in runs]
            for name in ("mean", "std", "lower", "upper"):
                assert isinstance(iv[name], float) and math.isfinite(iv[name]), (r["variant"], iv)
            assert iv["n"] == TINY_SEEDS
            assert iv["lower"] <= iv["mean"] <= iv["upper"]
            assert iv["mean"] == pytest.approx(statistics.mean(values))
            assert iv["std"] == pytest.approx(statistics.stdev(values))
            assert all(0.0 <= v <= 1.0 for v in values)
        assert r["params"] > 0 and r["train_seconds"] > 0 and r["samples_per_second"] > 0


def test_comparisons_with_cnn_and_lstm(board: dict[str, Any]) -> None:
    rows = _rows(board)
    for reference, key, p_key in (("cnn", "delta_vs_cnn", "p_vs_cnn_holm"),
                                  ("lstm", "delta_vs_lstm", "p_vs_lstm_holm")):  # fmt: skip
        ref_mean = rows[reference]["test_accuracy"]["mean"]
        assert rows[reference][key] is None and rows[reference][p_key] is None
        family = []
        for variant in RAN:
            if variant == reference:
                continue
            d = rows[variant][key]
            # Every seed scores the same test examples, so the pooled difference is the
            # difference of the mean accuracies.
            assert d["delta"] == pytest.approx(rows[variant]["test_accuracy"]["mean"] - ref_mean)
            assert d["lower"] <= d["upper"]
            assert 0.0 < d["p_value"] <= 1.0
            assert d["p_value"] <= rows[variant][p_key] <= 1.0  # Holm never lowers a p-value
            family.append((variant, d["p_value"]))
        # Holm over the variants compared with this reference (the unrun one is left out).
        adjusted = holm([p for _, p in family])
        for (variant, _), p in zip(family, adjusted, strict=True):
            assert rows[variant][p_key] == pytest.approx(p)
        assert rows[TINY_VARIANTS[-1]][key] is None


def test_reevaluations_are_cached_in_the_study(study: TinyStudy) -> None:
    # One entry per (configuration, seed): 3 variants that ran x 2 seeds, keyed ...:<seed>.
    opened = _optuna_study(study)
    attrs = opened._storage.get_study_system_attrs(opened._study_id)
    keys = [k for k in attrs if k.startswith(EVAL_ATTR + ":")]
    assert len(keys) == len(RAN) * TINY_SEEDS
    seeds = sorted(int(k.rsplit(":", 1)[1]) for k in keys)
    assert seeds == sorted([EVAL_SEED_BASE + i for i in range(TINY_SEEDS)] * len(RAN))


# --- the exports ----------------------------------------------------------------------------------


def test_csv_export(study: TinyStudy, board: dict[str, Any]) -> None:
    with open(study.out / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["variant"] for r in rows) == sorted(TINY_VARIANTS)
    by_json = _rows(board)
    for r in rows:
        if r["variant"] in RAN:
            low, mean, high = (float(r[k]) for k in ("test_acc_ci_low", "test_acc_mean",
                                                     "test_acc_ci_high"))  # fmt: skip
            assert low <= mean <= high
            assert mean == pytest.approx(by_json[r["variant"]]["test_accuracy"]["mean"])
            assert float(r["macro_f1_ci_low"]) <= float(r["macro_f1_ci_high"])
            assert int(r["seeds"]) == TINY_SEEDS and int(r["rank"]) >= 1
            assert json.loads(r["config"])["model"]["variant"] == r["variant"]
        else:
            assert r["note"] == "no finished trial"
            assert r["rank"] == "" and r["test_acc_mean"] == "" and r["seeds"] == "0"


def test_png_exports_are_valid_images(study: TinyStudy) -> None:
    for name in FORMAT_FILES["png"]:
        width, height = check_png(study.out / name)
        assert width >= 400 and height >= 200, (name, width, height)


def test_html_export(study: TinyStudy) -> None:
    page = (study.out / "leaderboard.html").read_text()
    assert '<table id="leaderboard">' in page
    head, rows = table(page, "leaderboard")
    assert head[:2] == ["rank", "variant"]
    assert len(rows) == len(TINY_VARIANTS)
    assert all(len(r) == len(head) for r in rows)
    assert sorted(r[1] for r in rows) == sorted(TINY_VARIANTS)
    unrun = next(r for r in rows if r[1] == TINY_VARIANTS[-1])
    assert "no finished trial" in unrun
    # The two plots are embedded, so the page stands alone.
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(i)[:8] == PNG_SIGNATURE for i in images)


def test_markdown_export(study: TinyStudy) -> None:
    lines = (study.out / "leaderboard.md").read_text().splitlines()
    assert lines[0] == f"# Leaderboard: {study.name}"
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| rank | variant |"))
    header = [c.strip() for c in lines[start].strip("|").split(" | ")]
    assert re.fullmatch(r"\|(---\|)+", lines[start + 1])
    assert lines[start + 1].count("---") == len(header)
    body = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        body.append([c.strip() for c in ln.strip().strip("|").split(" | ")])
    assert len(body) == len(TINY_VARIANTS)
    assert all(len(cells) == len(header) for cells in body)
    assert sorted(cells[1] for cells in body) == sorted(TINY_VARIANTS)


def test_dashboard_note_and_artifacts(study: TinyStudy) -> None:
    import optuna_dashboard
    from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta

    s = _optuna_study(study)
    note = optuna_dashboard.get_note(s)
    assert note.startswith("## lstmbench leaderboard")
    assert "| rank | variant |" in note
    for variant in TINY_VARIANTS:
        assert f"| {variant} |" in note
    assert "no finished trial" in note

    metas = get_all_artifact_meta(s)
    assert {m.filename for m in metas} == {"leaderboard.png", "history.png"}
    assert all(m.mimetype == "image/png" for m in metas)
    store = FileSystemArtifactStore(str(study.artifacts))
    for meta in metas:
        with store.open_reader(meta.artifact_id) as reader:
            assert reader.read(8) == PNG_SIGNATURE


# --- running again --------------------------------------------------------------------------------


def test_second_run_does_not_retrain(
    study: TinyStudy, board: dict[str, Any], tmp_path: Path, no_training: list[Any]
) -> None:
    from optuna.artifacts import get_all_artifact_meta

    before = len(get_all_artifact_meta(_optuna_study(study)))
    assert _run_in_process(study, tmp_path, "--seeds", str(TINY_SEEDS)) == 0
    assert no_training == []
    again = _strict_json(tmp_path / "leaderboard.json")
    assert again["rows"] == board["rows"]  # same runs, same statistics (seeded bootstrap)
    # The plots did not change, so they were not uploaded again.
    assert len(get_all_artifact_meta(_optuna_study(study))) == before


def test_no_retrain_with_more_seeds_than_cached(
    study: TinyStudy, tmp_path: Path, no_training: list[Any]
) -> None:
    seeds = TINY_SEEDS + 1
    code = _run_in_process(study, tmp_path, "--seeds", str(seeds), "--no-retrain",
                           "--formats", "json")  # fmt: skip
    assert code == 0 and no_training == []
    rows = _rows(_strict_json(tmp_path / "leaderboard.json"))
    for variant in RAN:
        assert len(rows[variant]["runs"]) == TINY_SEEDS
        assert rows[variant]["note"] == f"{TINY_SEEDS}/{seeds} seeds cached (--no-retrain)"
        assert rows[variant]["test_accuracy"]["n"] == TINY_SEEDS
    assert rows[TINY_VARIANTS[-1]]["note"] == "no finished trial"
    assert [p.name for p in tmp_path.iterdir()] == ["leaderboard.json"]


def test_one_seed_has_no_interval_and_writes_null(
    study: TinyStudy, tmp_path: Path, no_training: list[Any]
) -> None:
    # The first cached seed serves a one-seed leaderboard: the spread is unknown, so std and the
    # bounds are missing -- null in JSON (NaN is not JSON), empty in CSV, "(n=1)" in Markdown.
    code = _run_in_process(study, tmp_path, "--seeds", "1", "--no-retrain",
                           "--formats", "json,csv,md")  # fmt: skip
    assert code == 0 and no_training == []
    rows = _rows(_strict_json(tmp_path / "leaderboard.json"))
    for variant in RAN:
        iv = rows[variant]["test_accuracy"]
        assert iv["n"] == 1 and isinstance(iv["mean"], float)
        assert iv["std"] is None and iv["lower"] is None and iv["upper"] is None
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["variant"] in RAN:
                assert r["test_acc_std"] == r["test_acc_ci_low"] == r["test_acc_ci_high"] == ""
                assert float(r["test_acc_mean"]) >= 0
    assert "(n=1)" in (tmp_path / "leaderboard.md").read_text()


def test_html_alone_embeds_the_plots_and_leaves_no_png(
    study: TinyStudy, tmp_path: Path, no_training: list[Any]
) -> None:
    code = _run_in_process(study, tmp_path, "--seeds", str(TINY_SEEDS), "--no-retrain",
                           "--formats", "html")  # fmt: skip
    assert code == 0 and no_training == []
    assert [p.name for p in tmp_path.iterdir()] == ["leaderboard.html"]
    page = (tmp_path / "leaderboard.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2
    _, rows = table(page, "leaderboard")
    assert sorted(r[1] for r in rows) == sorted(TINY_VARIANTS)


# --- mistakes -------------------------------------------------------------------------------------


def test_user_errors_exit_2_with_one_line(study: TinyStudy) -> None:
    """Run as a user would: a real process, so a traceback would show."""
    other = study.root / "other-name.toml"
    other.write_text(study.toml.read_text().replace(f'name = "{study.name}"',
                                                    'name = "no-such-study"'))  # fmt: skip
    missing_db = study.root / "missing.db"
    cases = {
        "unknown study": (["leaderboard", str(other), "--storage", study.url],
                          [r"no study named 'no-such-study'", re.escape(study.name)]),
        "bad formats": (["leaderboard", str(study.toml), "--storage", study.url,
                         "--formats", "csv,pdf"], [r"'pdf'", r"csv,json,md,html,png"]),
        "no database": (["leaderboard", str(study.toml), "--storage", f"sqlite:///{missing_db}"],
                        [r"no such database file"]),
    }  # fmt: skip
    procs = {
        name: subprocess.Popen(
            lstmbench(*args, "--out", str(study.root / f"err-{i}")),
            cwd=study.root,
            env=study.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, (name, (args, _)) in enumerate(cases.items())
    }
    for i, (name, proc) in enumerate(procs.items()):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, f"{name}: expected one line on stderr, got:\n{err}"
        assert lines[0].startswith("lstmbench leaderboard: error: ")
        assert "Traceback" not in err
        for pattern in cases[name][1]:
            assert re.search(pattern, lines[0]), (name, lines[0])
        assert not (study.root / f"err-{i}").exists()  # nothing was exported
    assert not missing_db.exists()  # a read-only command does not create a database


@pytest.mark.parametrize("formats", ["csv,pdf", ",", "html;png", "CSV"])
def test_bad_formats_exit_2_before_any_work(
    study: TinyStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str], formats: str,
    no_training: list[Any],
) -> None:  # fmt: skip
    out = tmp_path / "out"
    assert _run_in_process(study, out, "--formats", formats) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--formats" in err[0] and "choose from" in err[0]
    assert not out.exists() and no_training == []


def test_seeds_below_one_exit_2(
    study: TinyStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run_in_process(study, tmp_path / "out", "--seeds", "0") == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cached_predictions_round_trip() -> None:
    # Predictions are cached as base64 uint16; class indices must come back unchanged.
    predictions = np.array([0, 9, 3, 101, 65535], dtype=np.int64)
    run = leaderboard_module.SeedRun(1, 0.5, 0.4, 1.0, 10.0, 100, predictions)
    back = leaderboard_module.SeedRun.from_cache(json.loads(json.dumps(run.to_cache())))
    assert back.predictions.dtype == np.int64
    assert back.predictions.tolist() == predictions.tolist()
    assert (back.seed, back.test_accuracy, back.params) == (1, 0.5, 100)
