"""The region comes from the workspace URL's host in every form AMP's query endpoint takes."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, build_settings
from gateway.config.settings import amp_region


@pytest.mark.parametrize(
    ("host", "region"),
    [
        ("aps-workspaces.us-east-1.amazonaws.com", "us-east-1"),
        ("aps-workspaces.eu-west-2.api.aws", "eu-west-2"),  # dual-stack
        ("aps-workspaces-fips.us-east-2.amazonaws.com", "us-east-2"),
        ("aps-workspaces-fips.us-west-2.api.aws", "us-west-2"),  # FIPS dual-stack
        ("aps-workspaces.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
        ("aps-workspaces-fips.us-gov-east-1.amazonaws.com", "us-gov-east-1"),
        ("aps-workspaces.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        ("aps-workspaces.cn-northwest-1.api.amazonwebservices.com.cn", "cn-northwest-1"),
        ("aps-workspaces.ap-southeast-7.amazonaws.com", "ap-southeast-7"),
        ("APS-Workspaces.EU-Central-1.AmazonAWS.com", "eu-central-1"),
        # interface VPC endpoints: the regional name, and the zonal one
        ("vpce-0123456789abcdef0-abcdefgh.aps-workspaces.us-east-1.vpce.amazonaws.com", "us-east-1"),
        (
            "vpce-0123456789abcdef0-abcdefgh-us-east-1a.aps-workspaces.us-east-1.vpce.amazonaws.com",
            "us-east-1",
        ),
        ("vpce-0a1b2c3d4e5f60718-x1y2z3w4.aps-workspaces.cn-north-1.vpce.amazonaws.com.cn", "cn-north-1"),
        # not AMP hosts: the region must be given
        ("aps.us-east-1.amazonaws.com", None),  # AMP's control plane
        ("aps-workspaces.amazonaws.com", None),
        ("aps-workspaces.foo.amazonaws.com", None),
        ("aps-workspaces.us-east-1.amazonaws.com.evil.example", None),
        ("aps-workspaces.us-east-1.api.aws.cn", None),
        ("aps-workspaces.us-east-1.vpce.amazonaws.com", None),  # no endpoint id
        ("vpce-0123-abc.aps-workspaces.us-east-1.amazonaws.com", None),  # an endpoint name needs .vpce.
        ("prometheus.internal", None),
        ("127.0.0.1", None),
    ],
)
def test_region_from_host(host: str, region: str | None) -> None:
    assert amp_region(host) == region


@pytest.mark.parametrize(
    ("host", "region"),
    [
        ("aps-workspaces-fips.us-west-2.api.aws", "us-west-2"),
        (
            "vpce-0123456789abcdef0-abcdefgh-us-east-1a.aps-workspaces.us-east-1.vpce.amazonaws.com",
            "us-east-1",
        ),
        ("aps-workspaces.cn-north-1.amazonaws.com.cn", "cn-north-1"),
    ],
)
def test_workspace_region_derived_from_its_url(host: str, region: str) -> None:
    url = f"https://{host}/workspaces/ws-0123abcd"
    settings = build_settings({"workspaces": [{"url": url}]}, {})
    assert settings.workspaces[0].region == region
    assert build_settings({}, {"GATEWAY_UPSTREAM_URL": url}).workspaces[0].region == region


def test_another_host_needs_its_region() -> None:
    with pytest.raises(ConfigError, match=r"^workspaces\[0\]\.region: required"):
        build_settings({"workspaces": [{"url": "https://prometheus.internal/workspaces/ws-1"}]}, {})
    settings = build_settings(
        {"workspaces": [{"url": "https://prometheus.internal/workspaces/ws-1", "region": "eu-west-1"}]}, {}
    )
    assert settings.workspaces[0].region == "eu-west-1"
