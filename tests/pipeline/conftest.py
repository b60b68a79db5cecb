"""What the pipeline's tests share."""

from __future__ import annotations

import pytest

from gateway.pipeline import shared as shared_module


@pytest.fixture
def short_leases(monkeypatch: pytest.MonkeyPatch) -> float:
    """Leases of 0.5 s renewed every 0.1 s, so that holders outlive them and the dead lose them."""
    monkeypatch.setattr(shared_module, "LEASE", 0.5)
    monkeypatch.setattr(shared_module, "LEASE_RENEW", 0.1)
    return 0.5
