"""Stage: authenticate. Who is asking, from a bearer token, HTTP basic credentials or a trusted
authenticating proxy's header (settings: `gateway.config.auth`). Failed sign-ins are throttled
per client address and per user name sent, known or not: a wrong password for a known user and
any password for an unknown one get the same answers (statuses, bodies, throttling) from the
same code path. With Redis the counts are the whole fleet's, else (and while it is away) those of
the workers of this host (pipeline/sign_in_failures.py)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from starlette.datastructures import Headers

from gateway.config import AuthSettings, Credential, Principal
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.host import HostStore
from gateway.pipeline.shared import SharedRedis
from gateway.pipeline.sign_in_failures import FAILURE_WINDOW, FailedSignIns, SharedFailedSignIns, failure_key

REALM = 'realm="amp-gateway"'


class Authenticator:
    """Resolves the principal of a request; raises GatewayError (401) when it cannot, 429 when its
    client address or principal failed to sign in too often lately."""

    def __init__(
        self,
        settings: AuthSettings | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedRedis | None = None,
        host: HostStore | None = None,
    ) -> None:
        """`shared`, `host`: where failed sign-ins are counted with the other processes'."""
        self.settings = settings or AuthSettings(enabled=False)
        self.metrics = metrics
        self.anonymous = Principal(name="anonymous", limits=self.settings.defaults)
        self._challenge = f"Bearer {REALM}"
        if any(c.password is not None for c in self.settings.credentials):
            # Basic first: Chromium reads the first challenge only, and without it a person
            # opening a page is shown the 401 page, never asked to sign in.
            self._challenge = f"Basic {REALM}, {self._challenge}"
        self.by_address = FailedSignIns(self.settings.failures_per_address, FAILURE_WINDOW, clock)
        self.by_user = FailedSignIns(self.settings.failures_per_principal, FAILURE_WINDOW, clock)
        self.failures = SharedFailedSignIns(shared, host)

    def _keys(self, address: str | None, username: str | None) -> list[tuple[str, FailedSignIns]]:
        keys = []
        if address is not None:
            keys.append((failure_key("address", address), self.by_address))
        if username is not None:
            keys.append((failure_key("user", username), self.by_user))
        return keys

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.auth_failures.labels(reason).inc()

    async def _fail(
        self, reason: str, message: str, address: str | None = None, username: str | None = None
    ) -> GatewayError:
        """The 401, counted against the address and the user name sent (known or not)."""
        self._count(reason)
        keys = self._keys(address, username)
        if keys:
            await self.failures.record(keys)
        return GatewayError("unauthorized", message, headers={"WWW-Authenticate": self._challenge})

    async def _throttle(self, address: str, username: str | None) -> None:
        """429 when the address, or the user name sent (known or not), failed too often lately."""
        throttled = await self.failures.retry_after(self._keys(address, username))
        if throttled is not None:
            wait, key = throttled
            self._count("throttled")
            seconds = max(1, math.ceil(wait))
            who = "this address" if key.startswith("address:") else "this user"
            raise GatewayError(
                "too_many_requests",
                f"too many failed sign-ins from {who}; try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )

    async def authenticate(self, headers: Headers, address: str) -> Principal:
        """The principal the request's credentials name; `address` is the client's."""
        settings = self.settings
        if not settings.enabled:
            return self.anonymous
        proxy = settings.proxy
        if proxy is not None and proxy.header in headers and proxy.trusts(address):
            return await self._from_proxy(headers.getlist(proxy.header), address)
        header = headers.get("authorization", "")
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and value.strip():
            # A token (256 bits, unguessable) is checked first and a right one always passes:
            # clients behind one ingress address must not be locked out by another's bad token.
            # Wrong ones from a busy address get 429s.
            credential = self._by_token(value.strip())
            if credential is None:
                await self._throttle(address, None)
                raise await self._fail("invalid", "the credentials are not valid", address)
            return await self._unexpired(credential, address)
        if scheme == "basic" and value.strip():
            # Passwords can be guessed: a throttled address or user name is refused, right or
            # wrong. The name is throttled whether it is configured or not, and the password
            # checked against every credential either way: nothing tells a known name.
            username, credential = self._by_password(value.strip())
            await self._throttle(address, username)
        else:
            raise await self._fail(
                "missing",
                "authentication required: send Authorization: Bearer <token> or HTTP basic credentials",
            )
        if credential is None:
            raise await self._fail("invalid", "the credentials are not valid", address, username)
        return await self._unexpired(credential, address)

    async def _unexpired(self, credential: Credential, address: str) -> Principal:
        if credential.expires is not None and datetime.now(UTC).timestamp() >= credential.expires:
            raise await self._fail(
                "expired", f'the credentials of "{credential.principal.name}" have expired', address
            )
        return credential.principal

    async def _from_proxy(self, values: list[str], address: str) -> Principal:
        if len(values) != 1 or "," in values[0]:
            raise await self._fail(
                "invalid", "the authenticating proxy's header must name exactly one user", address
            )
        name = values[0].strip()
        found = None
        for credential in self.settings.credentials:
            if hmac.compare_digest(credential.principal.name.encode(), name.encode()):
                found = credential
        if found is None:
            raise await self._fail(
                "invalid", "the user named by the authenticating proxy is not configured", address
            )
        return await self._unexpired(found, address)

    def _by_token(self, token: str) -> Credential | None:
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for credential in self.settings.credentials:  # no early exit: time does not depend on a match
            if credential.token is not None and hmac.compare_digest(credential.token, digest):
                found = credential
        return found

    def _by_password(self, encoded: str) -> tuple[str | None, Credential | None]:
        """(the user name sent, the credential it and the password match)."""
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        username, sep, password = decoded.partition(":")
        if not sep:
            return None, None
        digest = hashlib.sha256(password.encode()).digest()
        found = None
        for credential in self.settings.credentials:
            if credential.password is None or credential.username is None:
                continue
            user_ok = hmac.compare_digest(credential.username.encode(), username.encode())
            password_ok = hmac.compare_digest(credential.password, digest)
            if user_ok and password_ok:
                found = credential
        return username, found
