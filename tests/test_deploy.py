"""The deployment files cannot drift from the CLI: every command line in docker/compose.yaml and
docker/k8s/*.yaml must parse with the project's own argument parser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lstmbench.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


def _env_defaults() -> dict[str, str]:
    env = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    return env


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, with .env.example's values."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env:
            return env[name]
        if op == ":-":
            return arg or ""
        raise AssertionError(f"{name} is neither in .env.example nor given a default")

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", sub, text)


def _compose_commands() -> list[tuple[str, list[str]]]:
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    env = _env_defaults()
    return [
        (f"compose:{name}", [_interpolate(arg, env) for arg in service["command"]])
        for name, service in doc["services"].items()
        if "command" in service  # the lstmbench services; postgres runs its image's default
    ]


def _k8s_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in sorted((DOCKER / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []):
                if container.get("image", "").startswith("lstmbench"):
                    found.append((f"{path.name}:{container['name']}", container["args"]))
    return found


COMMANDS = _compose_commands() + _k8s_commands()


def test_every_deployment_service_is_found() -> None:
    names = {name for name, _ in COMMANDS}
    assert {
        "compose:create-study",
        "compose:worker",
        "compose:dashboard",
        "compose:leaderboard",
    } <= names
    assert {"study-job.yaml:create-study", "worker-job.yaml:worker"} <= names


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_deployment_command_parses(where: str, argv: list[str]) -> None:
    args = build_parser().parse_args(argv)  # SystemExit(2) on any unknown flag or command
    assert callable(args.func), where
    if args.command in ("worker", "study", "leaderboard"):
        assert args.study.startswith("/opt/lstmbench/studies/")
        study_file = ROOT / "studies" / Path(args.study).name
        assert study_file.is_file(), f"{where} names a study file the image does not ship"


def test_compose_keeps_secrets_and_ports_private() -> None:
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = doc["services"]
    assert "ports" not in services["postgres"], "the database must not be published"
    assert all(p.startswith("127.0.0.1:") for p in services["dashboard"]["ports"])
    text = (DOCKER / "compose.yaml").read_text()
    assert "POSTGRES_PASSWORD:?" in text, "the password must come from the env file"
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_compose_file_is_valid_for_a_real_implementation() -> None:
    """Debian's docker-compose validates the file without a Docker engine."""
    import os
    import shutil
    import subprocess

    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is missing; `make test` installs it (Debian package)")
        pytest.skip("docker-compose not installed (make test installs it)")
    env_file = DOCKER / ".env.example"
    result = subprocess.run(
        [exe, "-f", str(DOCKER / "compose.yaml"), "--env-file", str(env_file), "config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert rendered["services"]["worker"]["deploy"]["replicas"] == int(_env_defaults()["WORKERS"])
    # Without the env file the password is missing, and compose must refuse.
    bare = subprocess.run(
        [exe, "-f", str(DOCKER / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"},
    )
    assert bare.returncode != 0 and "POSTGRES_PASSWORD" in bare.stderr


def test_every_k8s_volume_claim_is_defined_in_the_example() -> None:
    """A pod whose claim nobody creates stays Pending for ever."""
    claims, defined = set(), set()
    for path in sorted((DOCKER / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            doc = doc or {}
            if doc.get("kind") == "PersistentVolumeClaim":
                defined.add(doc["metadata"]["name"])
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for volume in pod.get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    claims.add(volume["persistentVolumeClaim"]["claimName"])
    assert claims, "no pod mounts a claim: the test no longer sees the manifests"
    assert claims <= defined, f"claims used but never defined: {sorted(claims - defined)}"
