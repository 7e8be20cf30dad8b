"""The integration fixtures (real Redis by key prefix, ``bulkmail`` processes)."""

from tests.integration.conftest import bulkmail_env, forget_queue, provider_name

__all__ = ["bulkmail_env", "forget_queue", "provider_name"]
