"""The compose files and the Caddyfile refer to things that exist: settings the app
reads, services, volumes, commands and options of the CLI, the API's port.

No Docker engine here: the files are read as YAML (compose's own `docker compose
config` is the stricter check where Docker is installed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml  # type: ignore[import-untyped]  # installed with huggingface_hub

from image_search_service.cli import main
from image_search_service.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "deploy" / "docker-compose.yml"]
FILE_IDS = ["root", "deploy"]
CADDYFILE = ROOT / "deploy" / "Caddyfile"
SETTINGS = {name.upper() for name in Settings.model_fields}
# Read from the environment, not through Settings.
NOT_SETTINGS = {
    "FORWARDED_ALLOW_IPS",  # uvicorn: which proxies' X-Forwarded-* headers to trust
    "LOG_LEVEL",  # core/logging.py, set up before the settings are read
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())  # resolves the <<: merges
    return data


def _app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services running this project's image."""
    return {
        name: service
        for name, service in compose["services"].items()
        if str(service.get("image", "")).startswith("image-search-service")
    }


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=FILE_IDS)
def test_every_variable_the_app_is_given_is_a_setting(path: Path) -> None:
    services = _app_services(_load(path))
    assert {"api", "worker", "migrate"} <= set(services)
    for name, service in services.items():
        unknown = set(service.get("environment", {})) - SETTINGS - NOT_SETTINGS
        assert not unknown, f"{path.name}: {name} sets {sorted(unknown)}, which no setting reads"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=FILE_IDS)
def test_references_between_services_and_volumes_resolve(path: Path) -> None:
    compose = _load(path)
    services = compose["services"]
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        missing = set(depends) - set(services)
        assert not missing, f"{name} depends on {sorted(missing)}, not services of {path.name}"
        for mount in service.get("volumes", []):
            source = str(mount).split(":", 1)[0]
            if not source.startswith((".", "/", "$")):  # a named volume
                assert source in declared_volumes, f"{name} mounts undeclared volume {source}"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=FILE_IDS)
def test_the_commands_run_are_commands_and_options_of_the_cli(path: Path) -> None:
    for name, service in _app_services(_load(path)).items():
        args = [str(a) for a in service["command"]]
        command = main.commands.get(args[0])
        assert command is not None, f"{name} runs `image-search {args[0]}`, no such command"
        options = {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}
        options |= {opt for p in command.params for opt in getattr(p, "secondary_opts", [])}
        given = {a for a in args[1:] if a.startswith("--")}
        assert given <= options, f"{name}: unknown options {sorted(given - options)}"


def test_caddy_proxies_to_the_scaled_api_on_its_port() -> None:
    compose = _load(ROOT / "deploy" / "docker-compose.yml")
    text = CADDYFILE.read_text()
    match = re.search(r"^\s*dynamic a (\S+) (\d+)", text, re.MULTILINE)
    assert match is not None, "the Caddyfile has no `dynamic a <service> <port>` upstream"
    service, port = match.groups()
    api = compose["services"][service]
    command = [str(a) for a in api["command"]]
    assert command[command.index("--port") + 1] == port
    assert "ports" not in api, "the scaled API must not publish a host port (Caddy does)"
    mounted = [str(v) for v in compose["services"]["caddy"]["volumes"]]
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in mounted


def test_the_cluster_example_spreads_shards_over_replicated_nodes() -> None:
    compose = _load(ROOT / "deploy" / "docker-compose.yml")
    nodes = [n for n in compose["services"] if n.startswith("qdrant-")]
    assert len(nodes) == 3
    for node in nodes:
        service = compose["services"][node]
        assert service["environment"]["QDRANT__CLUSTER__ENABLED"] == "true"
        assert "qdrant" in service["networks"]["default"]["aliases"]
    env = _app_services(compose)["api"]["environment"]
    assert env["QDRANT_URL"] == "http://qdrant:6333"
    defaults = {k: re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", str(v)) for k, v in env.items()}
    settings = Settings(
        _env_file=None,
        qdrant_shards=defaults["QDRANT_SHARDS"],
        qdrant_replication_factor=defaults["QDRANT_REPLICATION_FACTOR"],
        qdrant_write_consistency=defaults["QDRANT_WRITE_CONSISTENCY"],
    )
    assert settings.qdrant_replication_factor <= len(nodes)
    assert settings.qdrant_shards % len(nodes) == 0  # an even spread
