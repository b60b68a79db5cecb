"""Prometheus HTTP API endpoints: parameter parsing, validation, the error envelope."""
