"""The KubeRay manifests (deploy/kuberay/) and the Serve config (deploy/ray/serve.yaml),
validated offline: the KubeRay resources against a schema derived from KubeRay's CRDs
(deploy/kuberay/schema/, where it came from is in its description), their pod templates against
Kubernetes' own PodTemplateSpec (kubernetes-validate's strict schemas, unknown fields refused),
the Serve config against Ray's ServeDeploySchema, the job's entrypoint against our CLI."""
from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

jsonschema = pytest.importorskip("jsonschema")
referencing = pytest.importorskip("referencing")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="the dev extra pins kubernetes-validate")

KUBERAY = REPO_ROOT / "deploy" / "kuberay"
SCHEMA = json.loads((KUBERAY / "schema" / "kuberay-v1.schema.json").read_text())
MANIFESTS = sorted(KUBERAY.glob("*.yaml"))
K8S_VERSION = "1.37.0"


def validator() -> jsonschema.Draft202012Validator:
    """The KubeRay schema, its `/api/_definitions.json` refs resolved to the Kubernetes
    definitions that kubernetes-validate ships (no network)."""
    from referencing.jsonschema import DRAFT202012

    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{K8S_VERSION}-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text())
    base = SCHEMA["$id"].rsplit("/kuberay/", 1)[0]
    registry = referencing.Registry().with_resources([
        (f"{base}/api/_definitions.json", DRAFT202012.create_resource(definitions)),
        (SCHEMA["$id"], DRAFT202012.create_resource(SCHEMA)),
    ])
    return jsonschema.Draft202012Validator(SCHEMA, registry=registry)


def errors(doc: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(doc)]


def load(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


def cluster_spec(doc: dict) -> dict:
    return {"RayCluster": lambda s: s, "RayJob": lambda s: s["rayClusterSpec"],
            "RayService": lambda s: s["rayClusterConfig"]}[doc["kind"]](doc["spec"])


def test_there_is_a_cluster_a_job_and_a_service():
    assert {load(m.name)["kind"] for m in MANIFESTS} == {"RayCluster", "RayJob", "RayService"}


@pytest.mark.parametrize("manifest", [m.name for m in MANIFESTS])
def test_manifest_is_valid(manifest):
    doc = load(manifest)
    assert errors(doc) == []
    groups = {g["groupName"]: g for g in cluster_spec(doc)["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}, "a CPU and a GPU worker group"
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "CUDAExecutionProvider" in {e.get("value", "") for e in gpu["env"]}.pop()
    assert cluster_spec(doc)["rayVersion"] == pinned("ray")


def pinned(name: str) -> str:
    import tomllib

    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cluster"]
    return next(d.split("==")[1] for d in extra if d.split("[")[0].split("==")[0] == name)


@pytest.mark.parametrize("break_it", [
    lambda d: cluster_spec(d)["workerGroupSpecs"][0].update(maxReplica=4),                   # a typo
    lambda d: cluster_spec(d)["workerGroupSpecs"][0].pop("groupName"),                       # required
    lambda d: cluster_spec(d)["headGroupSpec"]["template"]["spec"]["containers"][0].update(imagePullPolicy=3),
    lambda d: cluster_spec(d)["headGroupSpec"]["template"]["spec"]["containers"][0].update(resource={}),  # k8s typo
    lambda d: d.update(apiVersion="ray.io/v1alpha1"),
], ids=["typo", "required", "k8s-type", "k8s-typo", "api-version"])
def test_the_check_refuses_a_broken_manifest(break_it):
    doc = copy.deepcopy(load("rayjob-batch.yaml"))
    break_it(doc)
    assert errors(doc), "the schema let a broken manifest through: the check proves nothing"


def test_job_entrypoint_is_our_cli():
    from service.run.cli import build_parser

    words = shlex.split(load("rayjob-batch.yaml")["spec"]["entrypoint"])
    assert words[0] == "emotion-av"
    args = build_parser().parse_args(words[1:])
    assert args.command == "batch" and args.address == "auto" and args.resume and args.out.startswith("s3://")


def test_serve_configs_are_rays_and_the_same():
    schema = pytest.importorskip("ray.serve.schema", reason="the cluster extra is not installed")
    local = yaml.safe_load((REPO_ROOT / "deploy" / "ray" / "serve.yaml").read_text())
    schema.ServeDeploySchema.model_validate(local)
    on_k8s = yaml.safe_load(load("rayservice.yaml")["spec"]["serveConfigV2"])
    schema.ServeDeploySchema.model_validate(on_k8s)
    assert on_k8s["applications"] == local["applications"], "deploy/ray/serve.yaml and the RayService differ"
    module, attr = local["applications"][0]["import_path"].split(":")
    assert attr in (REPO_ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
