"""``lstmbench dashboard``: optuna-dashboard on the same storage the workers use, with the
artifact store that the leaderboard uploads its plots to."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from lstmbench.storage import mask_url, open_storage

__all__ = ["LOCAL_HOSTS", "serve"]

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve(url: str, host: str, port: int, artifacts: Path) -> None:
    """Serve until interrupted. Binding beyond localhost is allowed but warned about: the
    dashboard has no authentication and can edit notes and trial states."""
    import optuna_dashboard
    from optuna.artifacts import FileSystemArtifactStore

    storage = open_storage(url, must_exist=True)
    if host not in LOCAL_HOSTS:
        print(
            f"lstmbench dashboard: warning: binding to {host}, beyond this machine; the dashboard "
            "has no authentication, put it behind an authenticating proxy or use 127.0.0.1",
            file=sys.stderr,
        )
    artifacts.mkdir(parents=True, exist_ok=True)
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address needs brackets in a URL
    print(f"optuna-dashboard for {mask_url(url)} at http://{shown}:{port}/ (Ctrl-C stops it)",
          file=sys.stderr, flush=True)  # fmt: skip
    optuna_dashboard.run_server(storage, host=host, port=port,
                                artifact_store=FileSystemArtifactStore(str(artifacts)))  # fmt: skip
