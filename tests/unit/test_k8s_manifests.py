"""The Kubernetes manifests (``deploy/k8s``, a kustomize base) validate against the
Kubernetes API schemas, and agree with the gateway: its routes as probes, its port, its
shutdown grace, the settings and secrets it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelgarden.config import Settings
from modelgarden.security.auth import PUBLIC_EXACT
from modelgarden.server import LAST_RESORT

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VERSION = "1.30.0"


def resources() -> list[dict[str, Any]]:
    """Every resource the kustomization lists, in order."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        out.extend(doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc)
    return out


def find(kind: str, name: str) -> dict[str, Any]:
    return next(r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name)


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize(
    "resource", resources(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}"
)
def test_each_resource_validates_strictly(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, VERSION, strict=True)


def test_a_broken_resource_is_caught() -> None:
    broken = find("Deployment", "modelgarden")
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_the_gateway_deployment_matches_the_gateway() -> None:
    spec = find("Deployment", "modelgarden")["spec"]["template"]["spec"]
    (gateway,) = spec["containers"]
    env = {e["name"]: e["value"] for e in gateway["env"]}
    settings = Settings(host=env["GARDEN_HOST"], shutdown_grace=env["GARDEN_SHUTDOWN_GRACE"])
    assert settings.bind[1] == gateway["ports"][0]["containerPort"]
    assert gateway["livenessProbe"]["httpGet"]["path"] in PUBLIC_EXACT  # no key needed
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/ready"
    pre_stop = int(gateway["lifecycle"]["preStop"]["exec"]["command"][1])
    needed = pre_stop + settings.shutdown_grace + LAST_RESORT
    assert spec["terminationGracePeriodSeconds"] >= needed
    secret = find("Secret", "modelgarden")["stringData"]
    assert {"GARDEN_DATABASE_URL", "GARDEN_REDIS_URL", "GARDEN_BOOTSTRAP_KEY"} <= set(secret)
    (init,) = spec["initContainers"]
    assert init["command"][:3] == ["garden", "keys", "create"] and "--if-absent" in init["command"]
    assert Settings(
        database_url=secret["GARDEN_DATABASE_URL"], redis_url=secret["GARDEN_REDIS_URL"]
    )
