"""The one Lua loader: every script is a file under workers/lua/, read by LuaScript.load."""

from __future__ import annotations

import hashlib
from importlib import resources

import pytest

from workers.ratelimit.scripts import ACQUIRE, LEASE_COUNT
from workers.redis_ops import LuaScript


def test_include_files_come_first_in_order() -> None:
    common = resources.files("workers").joinpath("lua", "ratelimit", "_common.lua")
    body = resources.files("workers").joinpath("lua", "ratelimit", "acquire.lua")
    assert ACQUIRE.source == common.read_text("utf-8") + "\n" + body.read_text("utf-8")
    assert ACQUIRE.name == "ratelimit/acquire.lua"
    assert ACQUIRE.sha == hashlib.sha1(ACQUIRE.source.encode()).hexdigest()
    # the prelude defines clock(); a script that uses it must have it
    assert "local function clock" in LEASE_COUNT.source


def test_a_script_without_includes_is_its_file() -> None:
    script = LuaScript.load("retry_pump.lua")
    path = resources.files("workers").joinpath("lua", "retry_pump.lua")
    assert script.source == path.read_text("utf-8")
    assert repr(script) == "LuaScript('retry_pump.lua')"


def test_a_missing_script_fails_at_load() -> None:
    with pytest.raises(FileNotFoundError):
        LuaScript.load("no_such_script.lua")


def test_every_lua_file_is_loaded_by_some_module() -> None:
    # importing the modules that run scripts loads each one; a file nobody loads is dead
    import producers.enqueue
    import workers.batchlock
    import workers.feedback.store
    import workers.ledger
    import workers.pause
    import workers.ratelimit.scripts
    import workers.retry

    loaded = set()
    for module in (producers.enqueue, workers.batchlock, workers.feedback.store, workers.ledger,
                   workers.pause, workers.ratelimit.scripts, workers.retry):
        loaded |= {v.name for v in vars(module).values() if isinstance(v, LuaScript)}
    root = resources.files("workers").joinpath("lua")
    files = {p.name for p in root.iterdir() if p.name.endswith(".lua")}
    files |= {f"ratelimit/{p.name}" for p in root.joinpath("ratelimit").iterdir()
              if p.name.endswith(".lua") and not p.name.startswith("_")}
    assert files == loaded
