"""AWS credentials from the standard chain, and assumed roles, resolved off the event loop.

botocore resolves the chain (environment, shared config and profile, IRSA web identity,
container and instance roles) and refreshes temporary credentials. Its refresh is a blocking
network call, so it runs in a worker thread; between refreshes the frozen credentials are
served from memory.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    Credentials,
    DeferredRefreshableCredentials,
    ReadOnlyCredentials,
)
from botocore.exceptions import BotoCoreError, ClientError

from gateway.config import AwsSettings, Workspace

log = logging.getLogger("gateway.credentials")

# Refresh temporary credentials this long before they expire (botocore's advisory window).
REFRESH_MARGIN_SECONDS = 15 * 60


class CredentialError(Exception):
    """Credentials could not be resolved; the message is safe to show (no secrets)."""


@dataclass(frozen=True)
class RoleKey:
    role_arn: str | None
    external_id: str | None
    session_name: str


class CredentialSource:
    """Hands out current credentials for a workspace, refreshing before expiry."""

    def __init__(self, settings: AwsSettings) -> None:
        self._settings = settings
        self._session = botocore.session.Session(profile=settings.profile)
        self._base: Credentials | None = None
        self._roles: dict[RoleKey, Credentials] = {}
        self._lock = asyncio.Lock()

    async def get(self, workspace: Workspace) -> ReadOnlyCredentials:
        key = RoleKey(workspace.role_arn, workspace.external_id, workspace.session_name)
        credentials = self._roles.get(key)
        if credentials is None or _refresh_needed(credentials):
            async with self._lock:
                credentials = self._roles.get(key)
                if credentials is None or _refresh_needed(credentials):
                    return await asyncio.to_thread(self._resolve_and_freeze, key)
        return credentials.get_frozen_credentials()

    def _resolve_and_freeze(self, key: RoleKey) -> ReadOnlyCredentials:
        try:
            credentials = self._roles.get(key) or self._create(key)
            frozen = credentials.get_frozen_credentials()
        except (BotoCoreError, ClientError) as err:
            raise CredentialError(_describe(err, key)) from None
        if not frozen.access_key or not frozen.secret_key:
            raise CredentialError("no AWS credentials found in the standard chain")
        self._roles[key] = credentials
        return frozen

    def _create(self, key: RoleKey) -> Credentials:
        base = self._base_credentials()
        if key.role_arn is None:
            return base
        extra: dict[str, str] = {"RoleSessionName": key.session_name}
        if key.external_id:
            extra["ExternalId"] = key.external_id
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=self._sts_client_creator,
            source_credentials=base,
            role_arn=key.role_arn,
            extra_args=extra,
        )
        return DeferredRefreshableCredentials(method="assume-role", refresh_using=fetcher.fetch_credentials)

    def _base_credentials(self) -> Credentials:
        if self._base is None:
            credentials = self._session.get_credentials()
            if credentials is None:
                raise CredentialError(
                    "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                    "AWS_PROFILE, IRSA (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN), "
                    "or run with an instance or task role"
                )
            self._base = credentials
        return self._base

    def _sts_client_creator(self, service_name: str, **kwargs: Any) -> Any:  # botocore clients are untyped
        # A regional STS endpoint: tokens from the global one are refused in opt-in regions.
        region = self._settings.sts_region or kwargs.pop("region_name", None) or _default_region()
        kwargs.pop("region_name", None)
        if self._settings.sts_endpoint:
            kwargs["endpoint_url"] = self._settings.sts_endpoint
        return self._session.create_client(service_name, region_name=region, **kwargs)


def chain_method(settings: AwsSettings) -> str | None:
    """How the standard chain finds credentials here ("env", "assume-role-with-web-identity",
    "iam-role", …), or None when it finds none. Blocking: it may ask the instance metadata."""
    try:
        credentials = botocore.session.Session(profile=settings.profile).get_credentials()
    except (BotoCoreError, ClientError):
        return None
    return None if credentials is None else str(credentials.method)


def _refresh_needed(credentials: Credentials) -> bool:
    refresh_needed = getattr(credentials, "refresh_needed", None)
    return bool(refresh_needed and refresh_needed(REFRESH_MARGIN_SECONDS))


def _default_region() -> str:
    return botocore.session.get_session().get_config_variable("region") or "us-east-1"


def _describe(err: Exception, key: RoleKey) -> str:
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        code, message = error.get("Code", "Error"), error.get("Message", "")
        if key.role_arn:
            return f"assuming role {key.role_arn} failed: {code}: {message}"
        return f"resolving AWS credentials failed: {code}: {message}"
    what = f"assuming role {key.role_arn}" if key.role_arn else "resolving AWS credentials"
    return f"{what} failed: {type(err).__name__}: {err}"
