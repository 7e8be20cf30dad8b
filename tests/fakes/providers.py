"""Setup the provider unit tests share: the key in the environment, a provider wired to a
fake, and sending a batch that every recipient must get exactly once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest

from tests.fakes.base import Delivered, FakeApi
from tests.fakes.messages import assert_each_got_own, send_batch
from workers.providers.base import OutgoingMessage, Provider, SendResult

__all__ = ["env_fixture", "provider_factory", "send_each_own"]

P = TypeVar("P", bound=Provider)


def env_fixture(**values: str) -> Any:
    """An autouse fixture that sets these environment variables for every test."""

    @pytest.fixture(autouse=True)
    def _env(monkeypatch: pytest.MonkeyPatch) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return _env


def provider_factory(create: Callable[..., P], config_type: Any, name: str,
                     **defaults: object) -> Callable[..., P]:
    """``provider(fake, **cfg)``: the ``name`` provider on ``fake``'s transport, configured
    with ``defaults`` overridden by ``cfg``."""

    def provider(fake: FakeApi, **cfg: object) -> P:
        config = config_type.model_validate({**defaults, **cfg})
        return create(name, config, transport=fake.transport())

    return provider


def send_each_own(fake: FakeApi, provider: Provider, messages: Sequence[OutgoingMessage],
                  path: str, calls: int
                  ) -> tuple[list[SendResult],
                             list[tuple[OutgoingMessage, SendResult, Delivered]]]:
    """Send ``messages`` in ``calls`` calls to ``path``; each must succeed and each
    recipient get exactly its own. Returns the results and, for each message, its result
    and what its recipient received."""
    results = send_batch(provider, messages)
    assert len(fake.calls(path)) == calls
    assert all(r.ok for r in results)
    assert_each_got_own(fake.delivered, messages)
    by_to = {d.to: d for d in fake.delivered}
    each = [(m, r, by_to[m.recipient]) for m, r in zip(messages, results, strict=True)]
    return results, each
