"""The gateway, put together. The whole request path is composed here, in the order it runs.

An API call (`gateway.api.routes`) arrives as an `Incoming` and goes:

    authenticate   who is asking                                pipeline/authenticate.py
    rate limit     the principal's requests per second          pipeline/rate.py
    authorize      which workspace, and may they read it        pipeline/authorize.py
    validate       parameters checked as Prometheus does        pipeline/validate/
  then, as an immutable `Request`, through the stages:
    size limits    range, points, query length, result caps     pipeline/limits.py
    principal slots  requests in flight per principal           pipeline/slots/
    enforce        the principal's label matchers everywhere    pipeline/enforce.py
    budget warnings  past a share of a budget, answers say so     pipeline/cost/budget.py
    preflight      what AMP's query quotas would refuse         pipeline/preflight.py
    local answers  buildinfo, format_query, parse_query, exemplars  pipeline/local.py
    result caps    at most `limit` series or names              pipeline/result_caps.py
    cache          results cache (memory, Redis)                pipeline/cache/
    budgets        a fetch within what is left of its budgets   pipeline/cost/budget.py
    coalesce       identical requests in flight share one       pipeline/coalesce/
    edge guard     nothing unenforced leaves                    pipeline/edge_guard.py
    cost           stats=all asked, samples charged             pipeline/cost/meter.py
    retry          backoff within the request's deadline        pipeline/retry.py
    operation rate AMP's requests a second per API family       pipeline/operation_rate.py
    workspace slots  requests in flight per workspace           pipeline/slots/
    sign           the HTTP request, SigV4-signed               pipeline/sign.py
    send           one round trip                               pipeline/send.py

Every step raises GatewayError to refuse; `gateway.api.respond` writes it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import __version__
from gateway.api.cost import cost_routes
from gateway.api.middleware import AccessLog, SecurityHeaders, add_cors
from gateway.api.ops import Readiness, healthy, index, metrics_endpoint, ready_endpoint
from gateway.api.respond import error_response
from gateway.api.routes import PrometheusApi
from gateway.config import Settings, is_loopback
from gateway.errors import GatewayError
from gateway.logs import cap_library_loggers
from gateway.metrics import Metrics
from gateway.panels.routes import panel_routes
from gateway.pipeline.authenticate import Authenticator
from gateway.pipeline.authorize import authorizer
from gateway.pipeline.cache import PLAIN_SHARE, ResultsCache
from gateway.pipeline.coalesce import coalescing
from gateway.pipeline.compose import compose, instrumented
from gateway.pipeline.cost.budget import Budgets, budget_warnings, budgeting
from gateway.pipeline.cost.ledger import Ledger, cost_namespace
from gateway.pipeline.cost.meter import metering
from gateway.pipeline.credentials import CredentialSource, chain_method
from gateway.pipeline.edge_guard import edge_guard
from gateway.pipeline.endpoints import ENDPOINTS
from gateway.pipeline.enforce import EnforceSettings, enforcement
from gateway.pipeline.host import HostStore
from gateway.pipeline.limits import size_limits
from gateway.pipeline.local import local_answers
from gateway.pipeline.model import Answer, Handler, Incoming, Stage
from gateway.pipeline.operation_rate import Pacer, operation_rate
from gateway.pipeline.preflight import SampleHistory, preflight
from gateway.pipeline.rate import RateLimiter
from gateway.pipeline.result_caps import result_caps
from gateway.pipeline.retry import retrying
from gateway.pipeline.send import Sender
from gateway.pipeline.shared import SharedRedis
from gateway.pipeline.sign import signing
from gateway.pipeline.slots import principal_slots, workspace_slots
from gateway.pipeline.validate import Validator

log = logging.getLogger("gateway")


class Gateway:
    """The query path and the parts that must be closed when the app stops."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        host_path: str | None = None,
    ) -> None:
        """`host_path`: the store this process shares with the other workers of its `serve`;
        None: a store of its own (removed when it stops)."""
        self.settings = settings
        self.clock = clock  # the cache's idea of now (tests and benchmarks simulate time)
        self.metrics = metrics
        self._own_host_path = None if host_path else tempfile.mkdtemp(prefix="amp-gateway-host-")
        self.host = HostStore(
            host_path or self._own_host_path or "", host_bytes(settings), create=not host_path
        )
        # Redis, when configured, is shared by the cache, rate limits, upstream slots, coalescing
        # and the count of failed sign-ins; the host's store by this host's workers, without
        # Redis and while it is away.
        self.shared = SharedRedis(settings.cache, metrics) if settings.cache.redis_url else None
        self.authenticator = Authenticator(settings.auth, metrics, shared=self.shared, host=self.host)
        # AMP's query samples by workspace, principal, dashboard, ...: the cost view and budgets.
        self.ledger = Ledger(
            settings.cost, self.host, self.shared, metrics, clock, namespace=cost_namespace(settings)
        )
        self.sender = Sender(settings.upstream, metrics)
        signed = signing(CredentialSource(settings.aws), metrics, instrumented("send", self.sender))
        self.upstream: Handler = compose(
            [
                ("retry", retrying(settings.upstream, metrics)),
                (
                    "operation_rate",
                    operation_rate(
                        Pacer(settings.quotas.rates, metrics, self.shared, self.host, settings.fingerprint)
                    ),
                ),
                ("workspace_slots", workspace_slots(settings.upstream, metrics, self.shared, self.host)),
            ],
            ("sign", signed),
        )
        # Readiness asks each workspace without queueing for a slot: with Redis the slots are
        # the whole fleet's, and slow queries holding them must not make every replica unready.
        self.probe: Handler = instrumented("sign", signed)
        self.cache: ResultsCache | None = None
        # What queries cost before, for the pre-flight samples estimate; the cost meter notes each fetch.
        self.sample_history = SampleHistory()
        self.budgets = Budgets(settings.cost, self.ledger.spent, clock)
        stages: list[tuple[str, Stage]] = [
            ("size_limits", size_limits(metrics)),
            ("principal_slots", principal_slots(metrics, self.shared, self.host)),
            ("enforce", enforcement(EnforceSettings(override=settings.auth.override))),
        ]
        if self.budgets:  # a stage on every request, cache hits included: only with budgets
            stages.append(("budget_warnings", budget_warnings(self.budgets, settings.cost.soft_share)))
        stages += [
            # After enforcement: the query it checks and remembers costs of is the one AMP gets.
            ("preflight", preflight(settings.quotas, self.sample_history, metrics, clock)),
            ("local_answers", local_answers()),
            ("result_caps", result_caps()),
        ]
        if settings.cache.mode != "off":
            stages.append(("cache", self._cache_stage))
        if self.budgets:  # each fetch within its budgets; only fetches with one threshold coalesce
            stages.append(("budgets", budgeting(self.budgets)))
        stages += [
            (
                "coalesce",
                coalescing(
                    metrics.cache_coalesced.inc,
                    self.shared,
                    wait=settings.upstream.timeout + settings.upstream.retry_budget,
                    on_shared_remotely=metrics.coalesced_across_processes.inc,
                    host=self.host,
                    host_max_answer_bytes=min(settings.cache.max_answer_bytes, self.host.max_record_bytes),
                    on_saved=self.ledger.saved,
                ),
            ),
            ("edge_guard", edge_guard(metrics)),
            ("cost", metering(self.ledger.charge, self.sample_history.note)),
        ]
        self.query: Handler = compose(stages, ("upstream", self.upstream))
        self.authenticate = instrumented("authenticate", self.authenticator.authenticate)
        self.rate_limit = instrumented(
            "rate_limit", RateLimiter(metrics, self.shared, settings.fingerprint, self.host).admit
        )
        self.authorize = instrumented("authorize", authorizer(settings))
        self.validator = Validator(settings.upstream.timeout)
        self.validate = instrumented("validate", self.validator)

    def _cache_stage(self, next_handler: Handler) -> Handler:
        self.cache = ResultsCache(
            self.settings.cache,
            self.metrics,
            next_handler,
            self.clock,
            self.shared,
            host=self.host,
            workers=self.settings.workers or 1,
            on_saved=self.ledger.saved,
        )
        return self.cache

    async def ask(self, incoming: Incoming) -> Answer:
        """One API call, the whole way."""
        principal = await self.authenticate(incoming.headers, incoming.client)
        await self.rate_limit(principal)
        workspace = await self.authorize(principal, incoming.workspace)
        request = await self.validate(incoming, principal, workspace)
        return await self.query(request)

    async def start(self) -> None:
        if self.shared is not None:
            await self.shared.connect()

    async def aclose(self) -> None:
        await self.ledger.aclose()  # before Redis and the host's store close
        if self.cache is not None:
            await self.cache.aclose()
        if self.shared is not None:
            await self.shared.aclose()
        await self.sender.aclose()
        self.host.close()
        if self._own_host_path is not None:
            shutil.rmtree(self._own_host_path, ignore_errors=True)


def host_bytes(settings: Settings) -> int:
    """The host's store: the cache's bound less the plain copies' share."""
    memory = settings.cache.memory_bytes
    return memory - memory // PLAIN_SHARE


def startup_line(settings: Settings, workers: int) -> str:
    """What is served: one line at start-up."""
    workspaces = ", ".join(
        f"{w.id}{f' ({w.alias})' if w.alias else ''} at {w.host}{'' if w.sigv4 else ' unsigned'}"
        for w in settings.workspaces
    )
    cache = settings.cache.mode
    state = "limits, slots, coalescing and sign-in throttling shared by this host's workers"
    if settings.cache.redis_url:
        state += " and on Redis" + (" Cluster" if settings.cache.redis_cluster else "")
    if not settings.auth.enabled:
        auth = "none"
    else:
        auth = f"{len(settings.auth.credentials)} principals" + (
            f", proxy header {settings.auth.proxy.header}" if settings.auth.proxy else ""
        )
    scheme = "https" if settings.tls.cert_file else "http"
    return (
        f"amp-gateway {__version__} serving {scheme}://{settings.listen_host}:{settings.listen_port} "
        f"with {workers} worker{'s' if workers != 1 else ''}; workspaces: {workspaces}; "
        f"cache: {cache}; {state}; auth: {auth}"
    )


def warn_without_credentials(settings: Settings) -> None:
    """A warning at start-up when a signed workspace is configured and the chain finds nothing."""
    if any(w.sigv4 for w in settings.workspaces) and chain_method(settings.aws) is None:
        log.warning(
            "no AWS credentials found: every signed request will fail until some resolve "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, IRSA, or an instance or task role)"
        )


def create_app(
    settings: Settings, clock: Callable[[], float] = time.time, host_path: str | None = None
) -> Starlette:
    cap_library_loggers()
    metrics = Metrics()
    # Every error and limit counter whose labels the settings name, at 0 from the start.
    principals = [c.principal.name for c in settings.auth.credentials] or ["anonymous"]
    metrics.expect(
        [w.id for w in settings.workspaces],
        principals,
        settings.cache.redis_url is not None,
        enforced=[e.name for e in ENDPOINTS.values() if e.selects == "query" or e.match_required],
        cached=[e.name for e in ENDPOINTS.values() if e.cache],
    )
    gateway = Gateway(settings, metrics, clock, host_path)
    if not settings.auth.enabled and not is_loopback(settings.listen_host):
        log.warning("auth: none; anyone who reaches %s can query every workspace", settings.listen_host)
    api = PrometheusApi(settings, gateway.ask, metrics)
    readiness = Readiness(settings, gateway.probe, metrics)

    authenticate = gateway.authenticator.authenticate
    cost = cost_routes(settings, gateway.ledger, authenticate, gateway.rate_limit, metrics)

    # The API first: it is what nearly every request asks for, and the router tries routes in order.
    routes: list[BaseRoute] = [
        *cost,  # before the API's mount, whose catch-all answers every other /api/v1 path
        *api.routes(),
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/-/healthy", healthy, methods=["GET", "HEAD"]),
        Route("/-/ready", ready_endpoint(readiness), methods=["GET", "HEAD"]),
        Route("/metrics", metrics_endpoint(metrics), methods=["GET"]),
        *panel_routes(settings, api, gateway.authenticator),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.aclose()

    async def not_found(request: StarletteRequest, exc: Exception) -> Response:
        return error_response(GatewayError("not_found", f"no such path: {request.url.path}"))

    async def method_not_allowed(request: StarletteRequest, exc: Exception) -> Response:
        return error_response(GatewayError("bad_data", f"method {request.method} is not allowed here", 405))

    async def internal(request: StarletteRequest, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(GatewayError("internal", "internal error in the gateway; see its log"))

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: method_not_allowed, Exception: internal},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.gateway = gateway
    app.add_middleware(SecurityHeaders, frame_ancestors=settings.panels.frame_ancestors)
    if settings.auth.cors_origins:
        add_cors(app, settings.auth.cors_origins)
    app.add_middleware(AccessLog, enabled=settings.access_log, log_probes=settings.log_probes)
    return app
