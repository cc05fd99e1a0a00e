"""The deployment files: docker-compose.yml (Triton GPU + Milvus standalone + gateway), Dockerfile, .dockerignore.

No Docker engine runs where the tests run, so the structure is checked with PyYAML and against the code it must
agree with (Settings fields, the export folder, the Triton configs); the health-check command is run for real
against the session's gateway."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from export.triton_config import parse_config
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = ROOT / "Dockerfile"
GPU_REPOSITORY = "model_repository_gpu"


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR}`` with an empty environment."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def _volumes(service: dict) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax or long-syntax volume."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out.append((v.get("source", ""), v["target"], "ro" if v.get("read_only") else "rw"))
        else:
            parts = v.split(":")
            out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return out


def _is_named(source: str) -> bool:
    return bool(source) and not source.startswith((".", "/", "~", "$"))


def _image_tag(image: str) -> str:
    if "@sha256:" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _dockerfile_healthcheck_cmd() -> list[str]:
    (hc,) = [rest for kw, rest in _dockerfile_instructions() if kw == "HEALTHCHECK"]
    return json.loads(hc[hc.index("CMD") + 3:].strip())


# ------------------------------------------------------------------------------------------------- compose


def test_services_exist():
    assert {"triton", "etcd", "minio", "standalone", "gateway"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_image_pinned(name):
    image = SERVICES[name].get("image")
    assert image, f"{name}: every service names its image (built ones too, so the tag is pinned)"
    tag = _image_tag(image)
    assert tag and tag != "latest" and "$" not in tag, f"{name}: {image} is not pinned to a version"


def test_versions_are_the_documented_ones():
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:2[45]\.\d\d-py3", SERVICES["triton"]["image"])
    assert SERVICES["standalone"]["image"] == "milvusdb/milvus:v2.3.5"
    assert SERVICES["etcd"]["image"] == "quay.io/coreos/etcd:v3.5.5"
    assert SERVICES["minio"]["image"] == "minio/minio:RELEASE.2023-03-20T20-16-18Z"


def test_gateway_is_built_from_the_dockerfile():
    build = SERVICES["gateway"]["build"]
    context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = context / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
    assert dockerfile.resolve() == DOCKERFILE and DOCKERFILE.is_file()


def test_triton_reserves_a_gpu_and_serves_the_repository():
    triton = SERVICES["triton"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    command = triton["command"] if isinstance(triton["command"], list) else triton["command"].split()
    assert command[0] == "tritonserver" and "--model-repository=/models" in command
    assert "--grpc-port=8001" in command


def test_named_volumes_are_declared_and_used():
    declared = set(COMPOSE.get("volumes") or {})
    used = {src for svc in SERVICES.values() for src, _, _ in _volumes(svc) if _is_named(src)}
    assert used, "data services keep their state in named volumes"
    assert used == declared
    for name in ("etcd", "minio", "standalone"):
        assert any(_is_named(src) for src, _, _ in _volumes(SERVICES[name])), f"{name} persists to a named volume"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck(name):
    hc = SERVICES[name].get("healthcheck") or {}
    assert hc.get("test") and not hc.get("disable"), name
    if isinstance(hc["test"], list):
        assert hc["test"][0] in ("CMD", "CMD-SHELL"), name


@pytest.mark.parametrize("name", sorted(n for n in SERVICES if SERVICES[n].get("depends_on")))
def test_dependencies_wait_for_health(name):
    deps = SERVICES[name]["depends_on"]
    assert isinstance(deps, dict), f"{name}: use the long syntax with conditions"
    for dep, spec in deps.items():
        assert dep in SERVICES
        if SERVICES[dep].get("healthcheck"):
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}"


def test_gateway_waits_for_triton_and_milvus():
    deps = SERVICES["gateway"]["depends_on"]
    assert deps["triton"]["condition"] == deps["standalone"]["condition"] == "service_healthy"


def test_gateway_environment_is_real_settings(monkeypatch, tmp_path):
    env = _env(SERVICES["gateway"])
    keys = [k for k in env if k.startswith("VSEARCH_")]
    assert {"VSEARCH_TRITON_URLS", "VSEARCH_MILVUS_URI", "VSEARCH_HOST"} <= set(keys)
    unknown = [k for k in keys if k.removeprefix("VSEARCH_").lower() not in Settings.model_fields]
    assert not unknown, f"not fields of server.settings.Settings: {unknown}"
    monkeypatch.chdir(tmp_path)  # no .env file
    for k in list(Settings.model_fields):
        monkeypatch.delenv(f"VSEARCH_{k.upper()}", raising=False)
    for k in keys:
        monkeypatch.setenv(k, _interpolate(env[k]))
    s = Settings()  # parses every value (e.g. the JSON list of Triton URLs)
    assert s.host == "0.0.0.0"
    for url in s.triton_url_list():  # every Triton replica is a service of this file, on its gRPC port
        host, port = url.rsplit(":", 1)
        assert host in SERVICES and "triton" in SERVICES[host]["image"] and port == "8001"
    milvus = re.fullmatch(r"https?://([^:/]+):(\d+)", s.milvus_uri)
    assert milvus and milvus.group(1) == "standalone" and milvus.group(2) == "19530"
    published = {str(p).rsplit(":", 1)[-1] for p in SERVICES["gateway"]["ports"]}
    assert {str(s.port), str(s.metrics_port)} <= published


def test_triton_mounts_the_gpu_repository_that_export_writes(monkeypatch):
    # `vsearch export --target gpu` without --repository writes to this folder
    import launchers.exporting
    from clients.cli import export_cmd

    written = []
    monkeypatch.setattr(launchers.exporting, "export_served", lambda name, repo, target, settings, parity:
                        written.append(repo) or SimpleNamespace(path=repo / name, parity=[]))
    export_cmd(model=["m"], target="gpu", repository=None, parity=False)
    assert written == [Path(GPU_REPOSITORY)]

    mounts = {target: (src, mode) for src, target, mode in _volumes(SERVICES["triton"])}
    src, mode = mounts["/models"]
    assert (ROOT / src).resolve() == ROOT / GPU_REPOSITORY
    for model in Settings().models:
        path = ROOT / GPU_REPOSITORY / model / "config.pbtxt"
        assert path.is_file(), f"run: vsearch export --target gpu --model {model}"
        config = parse_config(path.read_text())
        assert config.name == model and config.backend == "onnxruntime"
        trt = {p: v for acc in config.optimization.execution_accelerators.gpu_execution_accelerator
               for p, v in acc.parameters.items()}
        cache = trt.get("trt_engine_cache_path", "")
        if cache.startswith("/models/"):  # Triton writes the engine cache inside the repository
            assert mode != "ro", "the TensorRT engine cache lies inside /models: it must be writable"


def test_healthcheck_is_the_images_own():
    assert SERVICES["gateway"]["healthcheck"]["test"] == ["CMD", *_dockerfile_healthcheck_cmd()]


# ---------------------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_sanity():
    instructions = _dockerfile_instructions()
    args = dict(re.fullmatch(r"(\w+)=(\S+)", rest).groups() for kw, rest in instructions
                if kw == "ARG" and "=" in rest)
    stages = []
    for kw, rest in instructions:
        if kw == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), rest.split()[0])
            assert image.startswith("python:3.11") or image in stages, image
            if image not in stages:
                tag = _image_tag(image)
                assert tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"FROM {image} is not pinned"
            if " AS " in rest.upper():
                stages.append(rest.split()[-1])
    final = instructions[max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM"):]
    users = [rest for kw, rest in final if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the gateway runs as a non-root user"
    assert [json.loads(rest) for kw, rest in final if kw == "CMD"][-1] == ["python", "-m", "server"]
    exposed = {p.split("/")[0] for kw, rest in final if kw == "EXPOSE" for p in rest.split()}
    assert {str(Settings.model_fields["port"].default), str(Settings.model_fields["metrics_port"].default)} <= exposed
    assert "grpc_health" in " ".join(_dockerfile_healthcheck_cmd())
    text = DOCKERFILE.read_text()
    torch_pin = re.search(r'"(torch==[^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"pip install {torch_pin} --index-url https://download.pytorch.org/whl/cpu" in text
    assert "proto/visualsearch/v1/search.proto" in text and (ROOT / "proto/visualsearch/v1/search.proto").is_file()


def test_dockerignore_keeps_what_the_image_copies():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert {".venv", "runs", "data", ".git"} <= set(patterns)
    assert "weights" not in patterns, "the exporter reads weights/"
    copied = [src for kw, rest in _dockerfile_instructions() if kw == "COPY" and "--from" not in rest
              for src in rest.split()[:-1]]
    assert copied
    for src in copied:
        assert (ROOT / src).exists(), src
        assert not any(fnmatch.fnmatch(src, p) for p in patterns if not p.startswith("!")), f"{src} is ignored"


def test_healthcheck_command_works_against_a_real_gateway(gateway, tmp_path):
    cmd = _dockerfile_healthcheck_cmd()
    assert cmd[0] == "python"
    port = gateway.address.rsplit(":", 1)[1]
    run = subprocess.run([sys.executable, *cmd[1:]], env={"VSEARCH_PORT": port}, capture_output=True,
                         timeout=30, cwd=tmp_path)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    from launchers.ports import free_port

    dead = subprocess.run([sys.executable, *cmd[1:]], env={"VSEARCH_PORT": str(free_port())}, capture_output=True,
                          timeout=30, cwd=tmp_path)
    assert dead.returncode != 0


def test_web_runs_a_real_command_against_the_gateway():
    """The web service runs `vsearch web` from the gateway's image; its options exist (an unknown one exits 2)."""
    from typer.testing import CliRunner

    from clients.cli import app

    web = SERVICES["web"]
    assert web["image"] == SERVICES["gateway"]["image"]
    command = web["command"]
    assert command[:2] == ["vsearch", "web"] and "gateway:50051" in command
    assert CliRunner().invoke(app, [*command[1:], "--help"]).exit_code == 0
    assert web["depends_on"]["gateway"]["condition"] == "service_healthy"
