"""The cluster files in cluster/ parse, have the fields their tools require, and agree with each other.

Spec:
* ray-cluster.yaml validates against the Ray autoscaler's own JSON schema (the one ``ray up`` uses),
  runs the csrgan image on GPU workers with autoscaling limits, keeps the dashboard on the head's
  loopback, opens nothing to 0.0.0.0/0, turns token auth on and mounts shared storage on every node.
* The KubeRay RayCluster and RayJob have the fields KubeRay requires (string-valued rayStartParams,
  replicas within min/max, GPU limits), token auth through ``authOptions``, a ClusterIP head, the
  shared volume on every pod; the RayJob's entrypoint is ``csrgan sweep`` on an experiment of this
  repository that validates with the real schema, with storage and data on the shared volume.
* The Dockerfile builds FROM the Ray image of the Ray version this project runs, pins torch like the
  Makefile, installs csrgan, bakes the weights in; every manifest uses the image tag it documents.
* cluster/README.md covers starting, submitting, results, GPU sizing and security, and the csrgan
  options it shows exist.
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

import csrgan
from csrgan.config import load_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
IMAGE = f"ghcr.io/csrgan/csrgan:{csrgan.__version__}-ray{ray.__version__}"
SHARED = "/mnt/shared"
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def load_all(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path}: no YAML documents"
    return docs


def by_kind(path: Path, kind: str) -> dict[str, Any]:
    found = [d for d in load_all(path) if d.get("kind") == kind]
    assert len(found) == 1, f"{path}: expected one {kind}, found {len(found)}"
    return found[0]


# ---------------------------------------------------------------------------------------- launcher
@pytest.fixture(scope="module")
def launcher() -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())


def test_launcher_config_passes_rays_schema(launcher: dict[str, Any]) -> None:
    import jsonschema

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(launcher, schema)  # what `ray up` checks first


def test_launcher_runs_the_image_on_gpu_workers_with_limits(launcher: dict[str, Any]) -> None:
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types
    assert launcher["docker"]["image"] == IMAGE
    assert types[launcher["head_node_type"]]["resources"] == {"CPU": 0}  # no trials on the head
    gpu = {name: t for name, t in types.items() if name != launcher["head_node_type"]}
    assert gpu, "no worker node type"
    for name, t in gpu.items():
        assert re.match(r"^(g5|g6|g6e|p4d|p4de|p5|p5e)\.", t["node_config"]["InstanceType"]), name
        assert 0 < t["min_workers"] <= t["max_workers"] <= launcher["max_workers"], name
    assert sum(t["max_workers"] for t in gpu.values()) <= launcher["max_workers"]


def test_launcher_keeps_ray_private_and_authenticated(launcher: dict[str, Any]) -> None:
    head = " ".join(launcher["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    run_options = " ".join(launcher["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in run_options
    assert launcher["file_mounts"] == {"/home/ray/.ray/auth_token": "~/.ray/csrgan-cluster-token"}
    rules = launcher["provider"]["security_group"]["IpPermissions"]
    cidrs = [r["CidrIp"] for rule in rules for r in rule.get("IpRanges", [])]
    assert cidrs and "0.0.0.0/0" not in cidrs
    assert [(r["FromPort"], r["ToPort"]) for r in rules] == [(22, 22)]  # only SSH from outside
    assert f"/mnt/efs:{SHARED}" in run_options  # shared storage, same path on every node
    assert any("mount -t nfs4" in c for c in launcher["initialization_commands"])


# ------------------------------------------------------------------------------------------ KubeRay
def check_ray_cluster_spec(spec: dict[str, Any], where: str) -> None:
    assert spec["rayVersion"] == ray.__version__, where
    assert spec["authOptions"] == {"mode": "token", "secretName": "csrgan-ray-auth"}, where
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", where
    groups = [("head", head), *((g["groupName"], g) for g in spec["workerGroupSpecs"])]
    for name, group in groups:
        params = group["rayStartParams"]
        assert all(isinstance(v, str) for v in params.values()), f"{where} {name}: rayStartParams are strings"
        pod = group["template"]["spec"]
        assert group["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "csrgan"
        c = pod["containers"][0]
        assert c["image"] == IMAGE, f"{where} {name}"
        assert {"cpu", "memory"} <= set(c["resources"]["limits"]), f"{where} {name}"
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
        assert any(mounts.get(n) == SHARED for n, claim in claims.items() if claim == "csrgan-shared"), (
            f"{where} {name}: the shared volume is not mounted at {SHARED}"
        )
    assert head["rayStartParams"]["num-cpus"] == "0", where
    for g in spec["workerGroupSpecs"]:
        assert DNS1123.match(g["groupName"]), g["groupName"]
        assert 0 < g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]
        res = g["template"]["spec"]["containers"][0]["resources"]
        gpus = res["limits"].get("nvidia.com/gpu")
        assert gpus is not None and int(gpus) >= 1, f"{where} {g['groupName']}: no GPUs"
        assert res["requests"].get("nvidia.com/gpu") == gpus  # extended resources: requests == limits


def test_raycluster_has_what_kuberay_requires() -> None:
    rc = by_kind(CLUSTER / "kuberay" / "raycluster.yaml", "RayCluster")
    assert rc["apiVersion"] == "ray.io/v1" and DNS1123.match(rc["metadata"]["name"])
    check_ray_cluster_spec(rc["spec"], "raycluster.yaml")
    assert rc["spec"]["enableInTreeAutoscaling"] is True


def test_rayjob_runs_csrgan_sweep_on_a_valid_experiment() -> None:
    job = by_kind(CLUSTER / "kuberay" / "rayjob.yaml", "RayJob")
    assert job["apiVersion"] == "ray.io/v1" and DNS1123.match(job["metadata"]["name"])
    spec = job["spec"]
    check_ray_cluster_spec(spec["rayClusterSpec"], "rayjob.yaml")
    assert spec["submissionMode"] == "SidecarMode"
    assert spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["shutdownAfterJobFinishes"] is True
    yaml.safe_load(spec["runtimeEnvYAML"])

    args = shlex.split(spec["entrypoint"])
    assert args[:4] == ["python", "-m", "csrgan.cli.app", "sweep"]
    image_file = Path(args[4])
    assert image_file.parts[:4] == ("/", "home", "ray", "csrgan")  # the Dockerfile's WORKDIR
    experiment = REPO / Path(*image_file.parts[4:])
    assert experiment.is_file(), f"{image_file} is not an experiment of this repository"
    opts: dict[str, list[str]] = {}
    for flag, value in zip(args[5::2], args[6::2], strict=True):
        opts.setdefault(flag, []).append(value)
    assert opts["--address"] == ["auto"]
    (storage,) = opts["--storage"]
    assert storage.startswith(f"{SHARED}/")
    cfg = load_config(experiment, opts["--set"])  # the real schema, as the cluster will run it
    paths = [cfg.data.train_hr, cfg.data.train_lr, cfg.data.real_lr]
    paths += [p for t in cfg.data.test_sets for p in (t.hr, t.lr)]
    for p in filter(None, paths):
        assert p.startswith(f"{SHARED}/"), f"{p}: not on the shared volume"


def test_setup_provides_shared_storage_and_a_private_network() -> None:
    setup = CLUSTER / "kuberay" / "setup.yaml"
    pvc = by_kind(setup, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "csrgan-shared"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every node mounts it
    policy = by_kind(setup, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "csrgan"}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    sources = [src for rule in policy["spec"]["ingress"] for src in rule["from"]]
    assert all("ipBlock" not in src for src in sources)  # no address-range (internet) access


# ------------------------------------------------------------------------------------------- image
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (CLUSTER / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_builds_the_documented_image() -> None:
    steps = dockerfile()
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1].strip('"')
        for i, rest in steps
        if i == "ARG" and "=" in rest
    }
    assert steps[0][0] == "ARG" and args["RAY_VERSION"] == ray.__version__
    (base,) = [rest for i, rest in steps if i == "FROM"]
    assert base == "rayproject/ray:${RAY_VERSION}-py311-gpu"
    makefile = (REPO / "Makefile").read_text()
    assert f"TORCH_PINS ?= {args['TORCH_PINS']}" in makefile  # the torch build the tests run
    runs = " ".join(rest for i, rest in steps if i == "RUN")
    assert "pip install --no-cache-dir ." in runs and "csrgan weights download all" in runs
    for i, rest in steps:
        if i == "COPY":
            *sources, _dest = [a for a in rest.split() if not a.startswith("--")]
            for s in sources:
                assert (REPO / s).exists(), f"COPY {s}: not in the repository"
    workdir = [rest for i, rest in steps if i == "WORKDIR"]
    assert workdir == ["/home/ray/csrgan"]
    build = re.search(r"docker build -f cluster/Dockerfile -t (\S+) \.", (CLUSTER / "Dockerfile").read_text())
    assert build and build.group(1) == IMAGE


def test_docker_context_keeps_the_venv_and_data_out() -> None:
    lines = (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    assert rules[0] == "**"  # everything out, then only what the Dockerfile copies back in
    assert {r.lstrip("!").rstrip("/") for r in rules if r.startswith("!")} == {
        "pyproject.toml",
        "README.md",
        "csrgan",
        "experiments",
    }


def test_every_manifest_uses_the_same_image() -> None:
    tags = set()
    for path in [CLUSTER / "ray-cluster.yaml", *sorted((CLUSTER / "kuberay").glob("*.yaml"))]:
        tags |= set(re.findall(r"ghcr\.io/\S+?:[\w.\-]+", path.read_text()))
    assert tags == {IMAGE}


# ------------------------------------------------------------------------------------------ README
@pytest.fixture(scope="module")
def readme() -> str:
    return (CLUSTER / "README.md").read_text()


def test_readme_covers_start_submit_results_sizing_security(readme: str) -> None:
    for needle in [
        "ray up cluster/ray-cluster.yaml",
        "kubectl apply -f cluster/kuberay/setup.yaml -f cluster/kuberay/raycluster.yaml",
        "cluster/kuberay/rayjob.yaml",
        "csrgan submit",
        "csrgan jobs status",
        "ray job submit",
        "csrgan results summary",
        "GPUs ÷ GPUs per trial",
        "RAY_AUTH_MODE=token",
        "~/.ray/auth_token",
        "authOptions",
        "127.0.0.1",
        "s3://",
        "--storage",
    ]:
        assert needle in readme, f"cluster/README.md does not mention {needle!r}"
    for path in CLUSTER.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert path.name in readme, f"cluster/README.md does not mention {path.relative_to(REPO)}"


def test_readme_shows_only_options_that_exist(readme: str) -> None:
    from csrgan.cli import jobs, submit, sweep

    def options(fn: Any) -> set[str]:
        out = set()
        for p in inspect.signature(fn).parameters.values():
            for meta in getattr(p.annotation, "__metadata__", ()):
                out |= {d for d in getattr(meta, "param_decls", ()) or () if d.startswith("--")}
            out.add("--" + p.name.rstrip("_").replace("_", "-"))
        return out

    known = {
        "submit": options(submit.submit),
        "sweep": options(sweep.sweep),
        "jobs": options(jobs.status) | options(jobs.logs) | options(jobs.stop),
    }
    known["submit"] |= {"--set"}
    used = re.findall(r"csrgan (submit|sweep|jobs \w+)((?:\\\n|[^\n`])*)", readme)
    assert used
    for cmd, rest in used:
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest):
            assert flag in known[cmd.split()[0]], f"README: `csrgan {cmd} ... {flag}` is not an option"
