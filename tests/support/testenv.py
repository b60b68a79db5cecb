"""Names and identities the shared fixtures set up (import these in tests)."""

from __future__ import annotations

AMP_REGION = "us-east-1"
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
