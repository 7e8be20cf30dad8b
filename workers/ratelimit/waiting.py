"""What to do with the messages a :class:`~workers.ratelimit.grant.Grant` did not cover:
sleep in the batch for a short wait, park in the retry queue for a long one (without
spending an attempt). Pure functions; the worker does the sleeping and parking."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from workers.ratelimit.grant import Grant

__all__ = ["RestPlan", "plan_rest", "plan_wait"]


def plan_wait(wait: float, max_wait: float) -> float | None:
    """Seconds to sleep before asking again, or ``None`` to park the work instead.

    A wait up to ``max_wait`` (the provider's ``max_wait`` setting) is slept through in
    the batch; a longer one would hold a worker process idle, so the work is parked.
    """
    if wait <= 0:
        return 0.0
    if wait <= max_wait:
        return wait
    return None


@dataclass(frozen=True, slots=True)
class RestPlan:
    """Per-domain decision for the messages a grant left over.

    ``retry``: domain -> count to ask for again after sleeping ``sleep`` seconds
    (``sleep`` is ``None`` when there is nothing to retry). ``park``: domain -> count to
    put in the retry queue, due in ``park_for`` seconds (the soonest any of them could
    progress; a parked domain that is still slow then is parked again).
    """

    sleep: float | None = None
    retry: dict[str, int] = field(default_factory=dict)
    park: dict[str, int] = field(default_factory=dict)
    park_for: float = 0.0


def plan_rest(grant: Grant, max_wait: float,
              rates: Mapping[str, float] | None = None) -> RestPlan:
    """Split what ``grant`` did not cover into domains to retry soon and domains to park.

    Each domain is judged by its own wait, so a domain limited to 1/min is parked while
    the others keep going. With ``rates`` (domain -> messages per second), a domain is
    also parked when sending all its remaining messages at that rate would take longer
    than ``max_wait``: otherwise a 5/s domain with 200 recipients in a batch would hold
    the worker process for 40 s, one short sleep at a time, while other batches wait.
    The sleep is the shortest wait among the retried domains: some progress is possible
    then, and those still waiting get a fresh wait next time.
    """
    retry: dict[str, int] = {}
    park: dict[str, int] = {}
    sleeps: list[float] = []
    park_waits: list[float] = []
    for domain, count in grant.remaining.items():
        wait = grant.wait_for(domain)
        rate = rates.get(domain) if rates else None
        drain = wait + count / rate if rate else wait
        sleep = plan_wait(wait, max_wait) if drain <= max_wait else None
        if sleep is None:
            park[domain] = count
            park_waits.append(wait)
        else:
            retry[domain] = count
            sleeps.append(sleep)
    return RestPlan(
        sleep=min(sleeps) if sleeps else None,
        retry=retry,
        park=park,
        park_for=min(park_waits) if park_waits else 0.0,
    )
