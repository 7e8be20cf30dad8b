"""Process-wide settings of the worker that keep the hot path cheap."""

from __future__ import annotations

import importlib.util
import logging


def test_httpx_request_logs_are_off_in_workers() -> None:
    import workers.app  # noqa: F401  (configures logging on import)

    # one INFO line per HTTP request would be one per message on per-message APIs
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING


def test_sniffio_is_installed() -> None:
    # httpcore imports it on every request; a failed import rescans sys.path each time
    assert importlib.util.find_spec("sniffio") is not None
