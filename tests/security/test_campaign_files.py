"""Security checklist, issue 9 item 4: a campaign file reads only files in its folder.

``text_file = "/proc/self/environ"`` used to mail the producer's environment (the relay
password included) to every recipient. ``*_file`` paths are now relative to the campaign
file's folder and must stay in it: no absolute paths, no ``..``, symlinks resolved and
required to stay inside, regular files only. The error names the key and the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config.errors import InputError
from config.providers import SmtpConfig
from producers.campaign import load_campaign

PROVIDERS = {"relay": SmtpConfig(kind="smtp", host="h")}
BASE = 'provider = "relay"\nfrom = "Shop <a@shop.test>"\nsubject = "Hi"\n'


def _campaign(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "spring.toml"
    p.write_text(BASE + body)
    return p


@pytest.mark.parametrize("ref", ["/proc/self/environ", "/etc/passwd", "//etc/passwd"])
def test_absolute_paths_refused(tmp_path: Path, ref: str) -> None:
    p = _campaign(tmp_path, f'text_file = "{ref}"\n')
    with pytest.raises(InputError) as caught:
        load_campaign(p, PROVIDERS)
    assert str(caught.value) == (f"{p}: field 'text_file': {ref!r} must be a path relative "
                                 "to the campaign file's folder, not an absolute one")


@pytest.mark.parametrize("ref", ["../secret.txt", "sub/../../secret.txt", "..",
                                 "sub/../body.txt"])
def test_dotdot_refused(tmp_path: Path, ref: str) -> None:
    (tmp_path / "secret.txt").write_text("hunter2")
    (tmp_path / "camp" / "sub").mkdir(parents=True)
    (tmp_path / "camp" / "body.txt").write_text("hello")
    p = _campaign(tmp_path / "camp", f'html_file = "{ref}"\n')
    with pytest.raises(InputError, match=r"spring.toml: field 'html_file': .* must not "
                                         r"contain '..'"):
        load_campaign(p, PROVIDERS)


def test_symlink_leading_outside_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("hunter2")
    camp = tmp_path / "camp"
    camp.mkdir()
    (camp / "body.txt").symlink_to(tmp_path / "secret.txt")
    (camp / "env.txt").symlink_to("/proc/self/environ")
    (camp / "outside").symlink_to(tmp_path, target_is_directory=True)
    for ref in ["body.txt", "env.txt", "outside/secret.txt"]:
        p = _campaign(camp, f'text_file = "{ref}"\n')
        with pytest.raises(InputError, match=rf"field 'text_file': '{ref}' leads outside the "
                                             r"campaign file's folder"):
            load_campaign(p, PROVIDERS)


def test_symlink_inside_the_folder_is_fine(tmp_path: Path) -> None:
    camp = tmp_path / "camp"
    (camp / "bodies").mkdir(parents=True)
    (camp / "bodies" / "v2.txt").write_text("Hello {{ email }}")
    (camp / "body.txt").symlink_to(camp / "bodies" / "v2.txt")
    spec, _ = load_campaign(_campaign(camp, 'text_file = "body.txt"\n'), PROVIDERS)
    assert spec.text == "Hello {{ email }}"
    spec, _ = load_campaign(_campaign(camp, 'text_file = "bodies/v2.txt"\n'), PROVIDERS)
    assert spec.text == "Hello {{ email }}"


def test_campaign_file_reached_through_a_relative_path(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    camp = tmp_path / "camp"
    camp.mkdir()
    (camp / "body.txt").write_text("hi")
    _campaign(camp, 'text_file = "body.txt"\n')
    monkeypatch.chdir(tmp_path)
    spec, _ = load_campaign(Path("camp/spring.toml"), PROVIDERS)
    assert spec.text == "hi"


def test_only_regular_files(tmp_path: Path) -> None:
    camp = tmp_path / "camp"
    camp.mkdir()
    os.mkfifo(camp / "pipe")
    (camp / "dir").mkdir()
    for ref in ["pipe", "dir"]:
        p = _campaign(camp, f'text_file = "{ref}"\n')
        with pytest.raises(InputError, match=rf"field 'text_file': '{ref}' is not a regular "
                                             "file"):
            load_campaign(p, PROVIDERS)


def test_file_key_must_be_a_name(tmp_path: Path) -> None:
    p = _campaign(tmp_path, "text_file = 5\n")
    with pytest.raises(InputError, match=r"field 'text_file' must be a non-empty file name"):
        load_campaign(p, PROVIDERS)
