"""Names and identities the shared fixtures set up (import these in tests)."""

from __future__ import annotations

from pathlib import Path

AMP_REGION = "us-east-1"


def static_aws_env(access_key: str, secret_key: str, sts_url: str, workdir: Path) -> dict[str, str]:
    """Environment for botocore: the static AMP key, region, STS endpoint, no user config."""
    return {
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_REGION": AMP_REGION,
        "AWS_DEFAULT_REGION": AMP_REGION,
        "AWS_ENDPOINT_URL_STS": sts_url,
        "AWS_CONFIG_FILE": str(workdir / "aws-config-absent"),
        "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "aws-credentials-absent"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


WORKSPACES = ("ws-test1", "ws-test2")
ACCOUNT_ID = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/amp-query"
EXTERNAL_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/amp-query-external"
EXTERNAL_ID = "test-external-id"
WEB_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/amp-query-web"
WEB_IDENTITY_TOKEN = "test-web-identity-token"

# Debian's Chromium, headless, with no background traffic (the machine's network is closed).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
