# amp-gateway: slim, non-root, with a health check.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app gateway
COPY --from=build /install /usr/local
WORKDIR /app
COPY dashboards ./dashboards
USER gateway
ENV GATEWAY_LISTEN=0.0.0.0:8080 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/-/healthy', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["amp-gateway"]
CMD ["serve"]
