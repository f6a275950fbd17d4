"""The dashboard and the leaderboard page, rendered by a real headless Chromium.

``lstmbench dashboard`` serves optuna-dashboard 0.21, a React single-page app: the HTML it sends
holds no study at all, the names and counts only appear once its scripts have run and fetched
``/api/...``. So these tests read the DOM *after* rendering (``chromium --dump-dom`` with a virtual
time budget) rather than the HTTP response. In optuna-dashboard 0.21 the study list shows each
study's name (not its trial count); a study's "Trials (List)" page shows ``<name> (id=<id>)`` and
``<N> Trials``, and its "Note" page the leaderboard that ``lstmbench leaderboard`` saved there.

Chromium comes from ``scripts/install-test-deps.sh``. Without it these tests are skipped, except
under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import optuna
import pytest

from browser import (
    TINY_VARIANTS,
    Dashboard,
    TinyStudy,
    check_png,
    dump_dom,
    dump_dom_until,
    require_chromium,
    screenshot,
    table,
    tiny_study,
    visible_text,
)


def _chromium_and_study(factory: pytest.TempPathFactory) -> TinyStudy:
    """Check for Chromium first, inside the test: missing under CI, the test FAILS (a setup
    error would not), and before the slow search runs."""
    require_chromium()
    return tiny_study(factory)


def _study_id(base: str, name: str) -> int:
    with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as reply:
        summaries = json.load(reply)["study_summaries"]
    ids = [s["study_id"] for s in summaries if s["study_name"] == name]
    assert len(ids) == 1, summaries
    return int(ids[0])


def test_dashboard_renders_study_name_and_trial_count(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    study = _chromium_and_study(tmp_path_factory)
    trials = len(optuna.load_study(study_name=study.name, storage=study.url).get_trials())
    assert trials == 3
    with Dashboard(study.url, study.artifacts, study.root, study.env) as dash:
        # The study list: the app fetched /api/studies and rendered the study.
        home = dump_dom_until(f"{dash.base}/dashboard/", tmp_path, [study.name])
        assert study.name in home, f"study list without {study.name!r}: {home[:2000]}"
        assert "Direction: MAXIMIZE" in home

        sid = _study_id(dash.base, study.name)
        page = f"{dash.base}/dashboard/studies/{sid}/trials"
        wanted = [f"{study.name} (id={sid})", f"{trials} Trials"]
        text = dump_dom_until(page, tmp_path, wanted)
        for w in wanted:
            assert w in text, f"{w!r} not rendered on {page}: {text[:2000]}"
        assert re.search(rf"(?<!\d){trials} Trials", text)
        for n in range(trials):
            assert f"Trial {n}" in text

        # The leaderboard note that `lstmbench leaderboard` saved, rendered from Markdown.
        note = dump_dom_until(f"{dash.base}/dashboard/studies/{sid}/note", tmp_path,
                              ["lstmbench leaderboard", *TINY_VARIANTS])  # fmt: skip
        assert "lstmbench leaderboard" in note
        assert all(v in note for v in TINY_VARIANTS), note[:2000]

        # The plots uploaded as study artifacts are listed on the study page.
        overview = dump_dom_until(f"{dash.base}/dashboard/studies/{sid}", tmp_path,
                                  ["leaderboard.png", "history.png"])  # fmt: skip
        assert "leaderboard.png" in overview and "history.png" in overview

        shot = tmp_path / "dashboard.png"
        screenshot(page, shot, tmp_path)
        assert check_png(shot) == (1280, 900)
        assert shot.stat().st_size > 10_000  # a rendered page, not a blank canvas
        assert "Traceback" not in dash.output()
    assert dash.proc is not None and dash.proc.poll() is not None  # the server was stopped


def test_leaderboard_html_renders_its_rows(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    study = _chromium_and_study(tmp_path_factory)
    page = study.out / "leaderboard.html"
    dom = dump_dom(page.resolve().as_uri(), tmp_path, budget_ms=2000)
    head, rows = table(dom, "leaderboard")
    assert head[:2] == ["rank", "variant"]
    assert sorted(r[1] for r in rows) == sorted(TINY_VARIANTS)
    text = visible_text(dom)
    assert f"Leaderboard · {study.name}" in text
    assert all(v in text for v in TINY_VARIANTS)
    unrun = next(r for r in rows if r[1] == study.unrun)
    assert "no finished trial" in unrun
    assert dom.count("<img") == 2  # both embedded plots survived parsing


# --- the helper's policy and the dashboard command's own output -----------------------------------


def test_missing_chromium_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_chromium(missing)
    for value in ("", "false", "0"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.skip.Exception, match="install-test-deps"):
            require_chromium(missing)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_chromium(missing)
    present = tmp_path / "chromium"
    present.write_text("#!/bin/sh\n")
    present.chmod(0o755)
    monkeypatch.setenv("CI", "true")
    assert require_chromium(str(present)) == str(present)


def _serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, host: str) -> dict[str, object]:
    """Call dashboard.serve with optuna-dashboard's server replaced by a recorder."""
    import optuna_dashboard

    from lstmbench.dashboard import serve

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(url)  # creates the file: serve() refuses a missing one
    seen: dict[str, object] = {}
    monkeypatch.setattr(optuna_dashboard, "run_server",
                        lambda storage, host, port, artifact_store: seen.update(
                            host=host, port=port, store=artifact_store))  # fmt: skip
    serve(url, host, 8123, tmp_path / "artifacts")
    assert (tmp_path / "artifacts").is_dir()
    return seen


def test_dashboard_announces_its_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _serve(monkeypatch, tmp_path, "127.0.0.1")
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    err = capsys.readouterr().err
    assert "http://127.0.0.1:8123/" in err and "warning" not in err
    _serve(monkeypatch, tmp_path, "0.0.0.0")
    err = capsys.readouterr().err
    assert "warning" in err and "no authentication" in err


def test_dashboard_url_for_ipv6_localhost_is_bracketed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "::1" is one of dashboard.LOCAL_HOSTS, so it is meant to work; the announced URL must then
    # be http://[::1]:8123/ (RFC 3986), not http://::1:8123/, which no browser opens.
    seen = _serve(monkeypatch, tmp_path, "::1")
    assert seen["host"] == "::1"
    err = capsys.readouterr().err
    assert "warning" not in err
    assert "http://[::1]:8123/" in err, err
