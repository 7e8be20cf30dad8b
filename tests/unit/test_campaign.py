from __future__ import annotations

from pathlib import Path

import pytest

from config.errors import InputError, TemplateError
from config.providers import SmtpConfig
from producers.campaign import header_variables, load_campaign

PROVIDERS = {"relay": SmtpConfig(kind="smtp", host="h")}


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


BASE = 'provider = "relay"\nfrom = "Shop <a@shop.test>"\nsubject = "Hi {{ name }}"\n'


def test_loads_bodies_from_files_relative_to_campaign(tmp_path: Path) -> None:
    (tmp_path / "body.html").write_text("<p>{{ name }}</p>")
    spec, compiled = load_campaign(
        _write(tmp_path, BASE + 'id = "c1"\ntext = "Hi"\nhtml_file = "body.html"\n'
               '[headers]\nX-Tag = "{{ tag }}"\n'), PROVIDERS)
    assert spec.id == "c1" and spec.html == "<p>{{ name }}</p>" and spec.text == "Hi"
    assert compiled.spec == spec
    assert header_variables(spec) == {"name", "tag"}


def test_id_generated_when_absent(tmp_path: Path) -> None:
    spec, _ = load_campaign(_write(tmp_path, BASE + 'text = "x"\n'), PROVIDERS)
    assert spec.id.startswith("c-") and spec.batch_size == 500


@pytest.mark.parametrize(("text", "message"), [
    (BASE.replace('"relay"', '"other"') + 'text = "x"\n', "unknown provider 'other'"),
    (BASE, "no body"),
    (BASE + 'text = "{% if %}"\n', "text"),
    (BASE + 'text = "x"\ntext_file = "y"\n', "set only one of 'text' and 'text_file'"),
    (BASE + 'html_file = "missing.html"\n', "field 'html_file': cannot read"),
    (BASE + 'text = "x"\nid = "has space"\n', "field 'id'"),
    (BASE + 'text = "x"\nbatch_size = 0\n', "batch_size"),
    (BASE + 'text = "x"\nsubjcet = "typo"\n', "unknown field(s) 'subjcet'"),
    ('provider = "relay"\nsubject = "x"\ntext = "x"\n', "missing required field 'from'"),
])
def test_rejected_before_enqueue(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises((InputError, TemplateError)) as exc:
        load_campaign(path, PROVIDERS)
    assert message in str(exc.value)
    assert str(path) in str(exc.value)
