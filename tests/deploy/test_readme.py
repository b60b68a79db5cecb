"""README "Running on EKS" agrees with the manifests: the IAM documents parse and name the
ServiceAccount the base creates, the permissions are the gateway's, and every path and command
it gives exists."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from deploy_support import KUSTOMIZE, REPO, TARGETS, one, rendered

QUERY_ACTIONS = {
    "aps:QueryMetrics",
    "aps:GetSeries",
    "aps:GetLabels",
    "aps:GetMetricMetadata",
    "aps:ListRules",
    "aps:ListAlerts",
}


@pytest.fixture(scope="module")
def section() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"^## Running on EKS\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no `## Running on EKS` section"
    return match.group(1)


def json_blocks(section: str) -> list[Any]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]


def test_trust_policy_names_the_service_account(section: str) -> None:
    docs = rendered("base")
    account = one(docs, "ServiceAccount", "amp-gateway")["metadata"]
    subject = f"system:serviceaccount:{account['namespace']}:{account['name']}"
    trust, _ = json_blocks(section)
    (statement,) = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert ":oidc-provider/" in statement["Principal"]["Federated"]
    conditions = statement["Condition"]["StringEquals"]
    assert {key.rsplit(":", 1)[1]: value for key, value in conditions.items()} == {
        "sub": subject,
        "aud": "sts.amazonaws.com",
    }
    provider = statement["Principal"]["Federated"].split(":oidc-provider/", 1)[1]
    assert all(key.startswith(provider + ":") for key in conditions)
    # eksctl is told the same namespace, name and role.
    role = account["annotations"]["eks.amazonaws.com/role-arn"].rsplit("/", 1)[1]
    assert f"--namespace {account['namespace']} --name {account['name']}" in section
    assert f"--role-name {role}" in section


def test_permission_policy_grants_the_queries_on_a_workspace(section: str) -> None:
    _, permissions = json_blocks(section)
    (statement,) = permissions["Statement"]
    assert statement["Effect"] == "Allow"
    assert set(statement["Action"]) == QUERY_ACTIONS
    assert re.fullmatch(r"arn:aws:aps:[a-z0-9-]+:\d{12}:workspace/ws-[\w-]+", statement["Resource"])


def test_paths_and_commands_exist(section: str) -> None:
    for path in set(re.findall(r"`((?:deploy|dashboards)/[^` ]*?)`", section)):
        path = path.split("*")[0].rstrip("/")
        assert (REPO / path).exists(), path
    for path in set(re.findall(r"`((?:base|overlays|components)/[^` ]*)`", section)):
        assert (KUSTOMIZE / path).exists(), path
    applied = re.findall(r"kubectl apply -k deploy/kustomize/(\S+)", section)
    assert applied and set(applied) <= set(TARGETS)
    assert "docker compose -f deploy/compose.yaml up" in section
    for probe in ("/-/healthy", "/-/ready"):
        assert probe in section
