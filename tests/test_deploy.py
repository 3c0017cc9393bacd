"""The cluster deployment files parse and name the image and command the code expects."""

from __future__ import annotations

import shlex
import tomllib

import ray
import yaml

from cluster import deploy
from cluster.cli import build_parser
from conftest import ROOT


def load(path):
    with open(ROOT / path) as f:
        return yaml.safe_load(f)


def parses_as_sweep(command: str) -> None:
    words = shlex.split(command)
    assert " ".join(words[:2]) == deploy.SWEEP_COMMAND
    args = build_parser().parse_args(words[1:])
    assert args.command == "sweep" and args.address == "auto"
    assert (ROOT / args.config).exists() or args.config.startswith("/sweep/")
    assert args.results.startswith("s3://")


def test_ray_versions_agree():
    """The images run the Ray that make install pins (constraints.txt), inside the range
    pyproject.toml asks for, and that this environment has."""
    from packaging.requirements import Requirement

    pins = [line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    assert f"ray=={deploy.RAY_VERSION}" in pins
    needs = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_req = next(Requirement(r) for r in needs if Requirement(r).name == "ray")
    assert deploy.RAY_VERSION in ray_req.specifier
    assert ray.__version__ == deploy.RAY_VERSION


def test_cluster_launcher_file():
    cfg = load(deploy.CLUSTER_FILE)
    assert cfg["docker"]["head_image"] == deploy.IMAGE
    assert cfg["docker"]["worker_image"] == deploy.GPU_IMAGE
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert cfg["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert any("dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"])
    usage = [line for line in (ROOT / deploy.CLUSTER_FILE).read_text().splitlines() if "scaling sweep" in line]
    assert usage, "the file says how to start a sweep"
    parses_as_sweep(usage[0].split('"')[1])


def test_rayjob_manifest():
    job = load(deploy.RAYJOB_FILE)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    parses_as_sweep(spec["entrypoint"])
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == deploy.RAY_VERSION
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == deploy.IMAGE
    assert head["volumeMounts"][0]["mountPath"] == "/sweep"
    workers = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert workers["image"] == deploy.GPU_IMAGE
    assert workers["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_dockerfile_pins_what_the_code_expects():
    text = (ROOT / "cluster" / "deploy" / "Dockerfile").read_text()
    assert f"rayproject/ray:{deploy.RAY_VERSION}" in text
    assert "torch==2.13.0" in text
    assert deploy.IMAGE in text
