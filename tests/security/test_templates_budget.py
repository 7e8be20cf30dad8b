"""Security checklist, issue 9 item 5: campaign templates are sandboxed and budgeted.

* jinja2 >= 3.1.6: the ``|attr('format')`` sandbox escape (CVE-2025-27516) is refused.
* A render budget per message (1 MiB of output, 1 s, ranges of 10,000 items, integers of
  14,000 bits by default): ``{{ 'a' * n }}`` building 10 MB and ``{{ n ** n }}`` burning
  a CPU fail fast, before the work is done, as a TemplateError for that recipient only;
  a real worker then marks just that recipient ``failed`` with kind ``template``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import redis

from config.errors import TemplateError
from config.schema import CampaignSpec, Recipient
from producers.capture import CaptureServer
from tests.integration.conftest import run_cli, wait_until, worker_processes
from workers.templates import CompiledCampaign, RenderBudget


def _render(text: str, budget: RenderBudget | None = None, html: bool = False,
            **variables: Any) -> str:
    spec = CampaignSpec(id="c", provider="p", sender="a@shop.test", subject="s",
                        **{"html" if html else "text": text})
    compiled = CompiledCampaign.compile(spec, budget=budget or RenderBudget())
    msg = compiled.render(Recipient(1, "r@example.test", variables))
    out = msg.html if html else msg.text
    assert out is not None
    return out


def _refused(text: str, match: str, budget: RenderBudget | None = None,
             **variables: Any) -> None:
    with pytest.raises(TemplateError, match=match):
        _render(text, budget, **variables)


# -- CVE-2025-27516 -----------------------------------------------------------------------

def test_jinja2_is_patched() -> None:
    assert tuple(int(p) for p in version("jinja2").split(".")[:3]) >= (3, 1, 6)


@pytest.mark.parametrize("template", [
    '{{ "{0.__class__.__init__.__globals__}"|attr("format")(email) }}',
    '{{ ("{0.__class__}"|attr("format"))(email) }}',
    '{{ "{0.__class__}".format(email) }}',
    "{{ email.__class__.__mro__ }}",
])
def test_format_sandbox_escape_refused(template: str) -> None:
    _refused(template, r"text: SecurityError: access to attribute '__\w+__' of '\w+' object "
                       r"is unsafe")


# -- the reported resource attacks ---------------------------------------------------------

def test_string_repetition_refused_before_it_is_built() -> None:
    _refused("{{ 'a' * n }}", r"text: render budget: repeating str 10000000 times builds "
                              r"more than 1048576 bytes", n=10_000_000)
    _refused("{{ n * 'ab' }}", "repeating str", n=600_000)
    _refused("{{ ([email] * n)|join }}", "render budget", n=100_000)
    assert _render("{{ '-' * n }}", n=72) == "-" * 72  # ordinary use still works


def test_power_refused_before_it_is_computed() -> None:
    _refused("{{ n ** n }}", r"text: render budget: a power over 14000 bits", n=100_000)
    _refused("{{ 10 ** n }}", "a power over", n=5000)
    assert _render("{{ 2 ** 10 }} {{ n ** 2 }}", n=12) == "1024 144"


def test_repeated_squaring_refused() -> None:
    _refused("{% set ns = namespace(x=3) %}{% for i in range(40) %}"
             "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}", "a product over 14000 bits")


def test_range_limited() -> None:
    _refused("{% for i in range(n) %}{% endfor %}",
             r"render budget: range\(\) of 1000000 items \(limit 10000\)", n=1_000_000)
    assert _render("{% for i in range(3) %}{{ i }}{% endfor %}") == "012"
    _refused("{{ range(20)|list|length }}", r"range\(\) of 20 items \(limit 10\)",
             RenderBudget(max_range=10))


def test_time_budget_stops_nested_loops() -> None:
    # 10^12 iterations: the loop hook sees the clock pass the budget
    _refused("{% for i in range(10000) %}{% for j in range(10000) %}{% for k in range(10000) %}"
             "{% endfor %}{% endfor %}{% endfor %}",
             r"render budget: took longer than 0.2 s", RenderBudget(max_seconds=0.2))


def test_time_budget_default_is_one_second() -> None:
    _refused("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
             r"render budget: took longer than 1 s")


def test_time_budget_stops_exponential_macros() -> None:
    _refused("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
             "{{ f(40) }}", r"render budget: took longer than 0.2 s",
             RenderBudget(max_seconds=0.2))


def test_output_limit_counts_as_it_streams() -> None:
    _refused("{% for i in range(3000) %}{{ chunk }}{% endfor %}",
             r"render budget: output over 1048576 bytes", chunk="x" * 1000)
    _refused("{% for i in range(30) %}{{ chunk }}{% endfor %}", r"output over 1000 bytes",
             RenderBudget(max_output_bytes=1000), chunk="x" * 100)


def test_output_limit_inside_set_blocks_macros_and_literal_loops() -> None:
    # built in a buffer, never written: counted as it is built all the same
    _refused("{% set x %}{% for i in range(5000) %}{{ chunk }}{% endfor %}{% endset %}"
             "{{ x|length }}", "output over 1048576 bytes", chunk="x" * 1000)
    _refused("{% macro m() %}{% for i in range(5000) %}{{ chunk }}{% endfor %}{% endmacro %}"
             "{{ m()|length }}", "output over 1048576 bytes", chunk="x" * 1000)
    # literal text repeated by a loop, no expression at all
    _refused("{% for i in range(10000) %}" + "lorem ipsum " * 20 + "{% endfor %}",
             "output over 1048576 bytes")
    assert len(_render("{% for i in range(100) %}" + "x" * 100 + "{% endfor %}")) == 10_000


def test_message_limit_covers_all_fields_in_bytes() -> None:
    # 600,000 two-byte characters: under the limit in characters, over it in bytes
    _refused("{{ body }}", r"render budget: the message is 1200\d{3} bytes, over 1048576",
             body="\u00e9" * 600_000)


@pytest.mark.parametrize(("template", "match"), [
    ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}", "'~' result over"),
    ("{% set l = [1] %}{% for i in range(60) %}{{ l.extend(l) }}{% endfor %}",
     "a call's result over"),
    ("{{ 'a'|center(100000000) }}", "center to 100000000"),
    ("{{ 'a'.ljust(100000000) }}", r"str.ljust\(\) to 100000000"),
    ("{{ '{:>100000000}'.format(1) }}", r"str.format\(\) with a padding width"),
    ("{{ '{:>{w}}'.format(1, w=100000000) }}", r"str.format\(\) with a padding width"),
    ("{{ '%100000000d' % 1 }}", "a %-format with a padding width"),
    ("{{ '%*d' % (100000000, 1) }}", "a %-format with a padding width"),
    ("{{ '%100000000d'|format(1) }}", "format with a padding width"),
    ("{{ email|replace('', 'x' * 100000) }}", r"replace\(\) over the output limit"),
    ("{{ email|indent(100000000) }}", "indent over the output limit"),
    ("{{ range(5)|batch(100000000)|list }}", "batch into 100000000"),
    ("{{ lipsum(100000) }}", r"lipsum\(\) of 100000 x 100 words"),
])
def test_amplifiers_refused(template: str, match: str) -> None:
    _refused(template, match)


def test_html_concatenation_still_escapes() -> None:
    out = _render("<p>{{ '<b>' ~ name ~ '</b>' }}</p>", html=True, name="A&B")
    assert out == "<p>&lt;b&gt;A&amp;B&lt;/b&gt;</p>"


def test_budget_is_per_recipient() -> None:
    spec = CampaignSpec(id="c", provider="p", sender="a@shop.test", subject="s",
                        text="Hi {{ name }} {{ 'x' * n }}")
    compiled = CompiledCampaign.compile(spec)
    ok = compiled.render(Recipient(1, "a@example.test", {"name": "Ann", "n": 3}))
    with pytest.raises(TemplateError, match="render budget"):
        compiled.render(Recipient(2, "b@example.test", {"name": "Bob", "n": 10**8}))
    again = compiled.render(Recipient(3, "c@example.test", {"name": "Cy", "n": 2}))
    assert (ok.text, again.text) == ("Hi Ann xxx", "Hi Cy xx")


# -- through a real worker ----------------------------------------------------------------

@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    yield from worker_processes(tmp_path, ["-m", "producers", "worker"], "worker")


@pytest.mark.integration
def test_worker_fails_only_the_recipient_over_budget(
        tmp_path: Path, capture: CaptureServer, redis_url: str, key_prefix: str,
        start_worker: Callable[..., Any]) -> None:
    provider = f"t{uuid.uuid4().hex[:8]}"
    providers = tmp_path / "providers.toml"
    providers.write_text(f'[providers.{provider}]\nkind = "smtp"\nhost = "127.0.0.1"\n'
                         f'port = {capture.port}\ntls = "none"\npool_size = 2\n')
    env = {**os.environ, "BULKMAIL_REDIS_URL": redis_url,
           "BULKMAIL_PROVIDERS": str(providers), "BULKMAIL_KEY_PREFIX": key_prefix,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    campaign = tmp_path / "c.toml"
    campaign.write_text(f'id = "budget"\nprovider = "{provider}"\nfrom = "a@shop.test"\n'
                        'subject = "Hi"\ntext = "Hello {{ \'x\' * n }} {{ m ** m }}"\n')
    rows = tmp_path / "list.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in [
        {"email": "ok1@example.test", "n": 2, "m": 3},
        {"email": "big@example.test", "n": 10_000_000, "m": 3},
        {"email": "cpu@example.test", "n": 1, "m": 100_000},
        {"email": "ok2@example.test", "n": 1, "m": 2},
    ]) + "\n")
    start_worker(provider, env, concurrency=1)
    try:
        done = run_cli(["send", str(campaign), "--recipients", str(rows), "--wait", "--json"],
                       env, timeout=120)
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout.strip().splitlines()[-1])
        assert (status["sent"], status["failed"], status["done"]) == (2, 2, True)
        assert wait_until(lambda: capture.received >= 2, timeout=10)
        assert set(capture.by_recipient) == {"ok1@example.test", "ok2@example.test"}
        listed = run_cli(["status", "budget", "--list", "failed", "--json"], env)
        failed = {e["email"]: e for e in map(json.loads, listed.stdout.splitlines())}
        assert set(failed) == {"big@example.test", "cpu@example.test"}
        assert all(e["kind"] == "template" for e in failed.values())
        assert "render budget: repeating str" in failed["big@example.test"]["reason"]
        assert "render budget: a power over" in failed["cpu@example.test"]["reason"]
    finally:
        client = redis.Redis.from_url(redis_url)
        client.delete(f"bulkmail.{provider}", f"_kombu.binding.bulkmail.{provider}")
        for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
            client.delete(key)
        client.close()
