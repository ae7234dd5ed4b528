"""The demo: a page the project ships (`form.html`) and DESIGN.md's example job."""

from __future__ import annotations

import copy
import importlib.resources
from pathlib import Path
from typing import Any

# DESIGN.md's example job, as written there; `example_job` points it at a served page.
EXAMPLE_JOB: dict[str, Any] = {
    "queue": "default",
    "priority": "PRIORITY_HIGH",
    "maxAttempts": 3,
    "browser": {
        "steps": [
            {"navigate": {"url": "http://127.0.0.1:8080/form.html"}},
            {"fill": {"target": {"selector": "#name"}, "text": "Ada"}},
            {"click": {"target": {"selector": "#missing", "fallbacks": ["#submit"]}}},
            {"expect": {"target": {"selector": "#out"}, "textContains": "Hello Ada"}},
            {"extract": {"target": {"selector": "#out"}, "key": "greeting"}},
            {"screenshot": {"fullPage": True}},
        ]
    },
}


def example_job(page_url: str) -> dict[str, Any]:
    """The example job with its navigate step pointed at `page_url`."""
    job = copy.deepcopy(EXAMPLE_JOB)
    job["browser"]["steps"][0]["navigate"]["url"] = page_url
    return job


def pages_dir() -> Path:
    """The directory holding form.html (a real directory: the package is installed
    from files, never from a zip)."""
    return Path(str(importlib.resources.files(__name__)))
