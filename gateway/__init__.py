"""Query and visualization gateway for Amazon Managed Service for Prometheus."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("amp-gateway")  # the installed version: pyproject.toml says it once
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "unknown"
