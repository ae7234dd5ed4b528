"""Addresses, as both the services and the clients need to read them."""

from __future__ import annotations

import ipaddress


def is_loopback(addr: str) -> bool:
    """Whether a listen address (host:port, [v6]:port, unix:...) is reachable only from
    this machine."""
    if addr.startswith("unix:"):
        return True
    host = addr.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
