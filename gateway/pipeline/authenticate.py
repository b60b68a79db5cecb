"""Stage: authenticate. Who is asking, from a bearer token, HTTP basic credentials or a trusted
authenticating proxy's header (settings: `gateway.config.auth`). Failed sign-ins are throttled
per client address and per principal."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from cachetools import TTLCache
from starlette.datastructures import Headers

from gateway.config import AuthSettings, Credential, Principal
from gateway.errors import GatewayError
from gateway.metrics import Metrics

REALM = 'realm="amp-gateway"'
# Failed sign-ins are counted per minute, from one client address and for one principal (from
# any address; a higher default, so that others cannot lock a team out as easily as they can
# slow a guesser): auth.failed_sign_ins.
FAILURE_WINDOW = 60.0


class FailedSignIns:
    """Fixed windows of failed sign-ins per key (a client address, a principal): past `limit`
    failures in `window` seconds, the key's further attempts are refused until the window ends,
    right credentials included (that is what stops guessing). Bounded in keys."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._windows: TTLCache[str, list[float]] = TTLCache(maxsize=max_keys, ttl=window, timer=clock)

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may try again, or None when it may now."""
        found = self._windows.get(key)
        if found is None or found[1] < self.limit:
            return None
        return max(0.0, found[0] + self.window - self._clock())

    def record(self, key: str) -> None:
        found = self._windows.get(key)
        if found is None:
            self._windows[key] = [self._clock(), 1]
        else:
            found[1] += 1


class Authenticator:
    """Resolves the principal of a request; raises GatewayError (401) when it cannot, 429 when its
    client address or principal failed to sign in too often lately."""

    def __init__(
        self,
        settings: AuthSettings | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or AuthSettings(enabled=False)
        self.metrics = metrics
        self.anonymous = Principal(name="anonymous", limits=self.settings.defaults)
        self._challenge = f"Bearer {REALM}"
        if any(c.password is not None for c in self.settings.credentials):
            self._challenge += f", Basic {REALM}"
        self.by_address = FailedSignIns(self.settings.failures_per_address, FAILURE_WINDOW, clock)
        self.by_principal = FailedSignIns(self.settings.failures_per_principal, FAILURE_WINDOW, clock)

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.auth_failures.labels(reason).inc()

    def _fail(
        self, reason: str, message: str, address: str | None = None, principal: str | None = None
    ) -> GatewayError:
        self._count(reason)
        if address is not None:
            self.by_address.record(address)
        if principal is not None:
            self.by_principal.record(principal)
        return GatewayError("unauthorized", message, headers={"WWW-Authenticate": self._challenge})

    def _throttle(self, address: str, principal: str | None) -> None:
        wait = self.by_address.retry_after(address)
        who = "this address"
        if wait is None and principal is not None:
            wait, who = self.by_principal.retry_after(principal), "this user"
        if wait is not None:
            self._count("throttled")
            seconds = max(1, math.ceil(wait))
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
            return self._from_proxy(headers.getlist(proxy.header), address)
        header = headers.get("authorization", "")
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and value.strip():
            # A token (256 bits, unguessable) is checked first and a right one always passes:
            # clients behind one ingress address must not be locked out by another's bad token.
            # Wrong ones from a busy address get 429s.
            credential = self._by_token(value.strip())
            if credential is None:
                self._throttle(address, None)
                raise self._fail("invalid", "the credentials are not valid", address)
            return self._unexpired(credential, address)
        if scheme == "basic" and value.strip():
            # Passwords can be guessed: a throttled address or user is refused, right or wrong.
            username, credential = self._by_password(value.strip())
            named = self._principal_named(username)
            self._throttle(address, named)
        else:
            raise self._fail(
                "missing",
                "authentication required: send Authorization: Bearer <token> or HTTP basic credentials",
            )
        if credential is None:
            raise self._fail("invalid", "the credentials are not valid", address, named)
        return self._unexpired(credential, address)

    def _unexpired(self, credential: Credential, address: str) -> Principal:
        if credential.expires is not None and datetime.now(UTC).timestamp() >= credential.expires:
            raise self._fail(
                "expired", f'the credentials of "{credential.principal.name}" have expired', address
            )
        return credential.principal

    def _principal_named(self, username: str | None) -> str | None:
        if username is None:
            return None
        for credential in self.settings.credentials:
            if credential.username is not None and hmac.compare_digest(
                credential.username.encode(), username.encode()
            ):
                return credential.principal.name
        return None

    def _from_proxy(self, values: list[str], address: str) -> Principal:
        if len(values) != 1 or "," in values[0]:
            raise self._fail(
                "invalid", "the authenticating proxy's header must name exactly one user", address
            )
        name = values[0].strip()
        found = None
        for credential in self.settings.credentials:
            if hmac.compare_digest(credential.principal.name.encode(), name.encode()):
                found = credential
        if found is None:
            raise self._fail(
                "invalid", "the user named by the authenticating proxy is not configured", address
            )
        return self._unexpired(found, address)

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
