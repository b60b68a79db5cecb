"""Query and visualization gateway for Amazon Managed Service for Prometheus."""

__version__ = "0.1.0"
