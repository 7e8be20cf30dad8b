"""The HTTP API (``bulkmail api``): FastAPI over the same producers, ledger and queues as
the CLI. ``create_app(settings, config)`` in :mod:`producers.service.app` builds it."""
