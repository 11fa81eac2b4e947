"""Shared fixtures: the demo site, free loopback ports, service URLs from the environment."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from model.site import SiteConfig, load_site

# Property tests check behaviour, not speed: on a shared 2-core machine an example may take
# longer than hypothesis' default 200 ms deadline. Speed lives in the benchmarks.
settings.register_profile(
    "vpp", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("vpp")

ROOT = Path(__file__).resolve().parent.parent
DEMO_SITE = ROOT / "tools" / "demo_site.yaml"
SHARED_DATA = ROOT.parent / "shared" / "data"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_url(var: str, what: str) -> str:
    """The URL in env var `var`; skip with a reason when unset, fail when CI requires services."""
    url = os.environ.get(var)
    if not url:
        if os.environ.get("VPP_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{var} is not set but VPP_REQUIRE_SERVICES=1: {what} is required")
        pytest.skip(f"{var} not set: no {what} to test against")
    return url


@pytest.fixture
def demo_site() -> SiteConfig:
    """The embedded demo site."""
    return load_site(DEMO_SITE)


@pytest.fixture
def port() -> int:
    """A free loopback port."""
    return free_port()


@pytest.fixture
def new_port():
    """A function returning a fresh free loopback port per call."""
    return free_port
