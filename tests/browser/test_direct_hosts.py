"""Which allowed hosts a job's context reaches without its policy proxy: IP literals
in their one canonical spelling only (names are resolved and checked by the proxy)."""

from __future__ import annotations

from executor.browser.url_policy import direct_hosts


def test_only_canonical_ip_literals_bypass_the_policy_proxy() -> None:
    allowed = ["127.0.0.1", " 10.0.0.5 ", "::1", "[fd00::2]", "localhost", ".example.com", "example.org",
               "0x7f.1", "127.1", "2130706433", "127.0.0.1"]
    assert direct_hosts(allowed) == ["127.0.0.1", "10.0.0.5", "[::1]", "[fd00::2]"]
    assert direct_hosts([]) == [] and direct_hosts(["localhost"]) == []
