# amp-gateway: slim, non-root (numeric UID/GID 10001, so Kubernetes can verify runAsNonRoot),
# runs with a read-only root filesystem (only /tmp needs to be writable).
#
# Probes, all unauthenticated, on port 8080:
#   GET /-/healthy  liveness: the process serves HTTP (also the HEALTHCHECK below)
#   GET /-/ready    readiness: credentials resolve and every workspace answers (503 until then;
#                   checked at most every 10 s)
#   GET /metrics    Prometheus metrics
# Kubernetes ignores HEALTHCHECK: deploy/kustomize/base/deployment.yaml sets the probes.
#
# Build: docker build -t amp-gateway .   (context: the repository root; see .dockerignore)

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# 1. Dependencies, from pyproject.toml alone: this layer is rebuilt when pyproject.toml
#    changes, not when the source does.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
# 2. The gateway itself (its dependencies are in place already), with the shipped dashboards,
#    which the package build maps into the wheel (pyproject.toml's package-dir).
COPY README.md LICENSE ./
COPY dashboards ./dashboards
COPY gateway ./gateway
RUN pip install --no-deps . \
    && cd / && python -c "import gateway.app"

FROM python:3.11-slim
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The shipped dashboards are in the installed package (gateway.shipped_dashboards, the default
# panels.dashboards_dir); mount others and set panels.dashboards_dir to use them instead.
ENV PATH=/opt/venv/bin:$PATH \
    GATEWAY_LISTEN=0.0.0.0:8080 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080
# `serve` stops on SIGTERM: requests in flight get GATEWAY_SHUTDOWN_GRACE (25 s) to finish.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/-/healthy', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["amp-gateway"]
CMD ["serve"]
