"""engine.store.held: one bounded holder for datasets, models and prompt vectors."""

from __future__ import annotations

import threading

import pytest

from engine.store.held import Held, release_idle


def test_least_recently_used_goes_first_once_over_the_byte_bound() -> None:
    held: Held[str, bytes] = Held("t", max_bytes=10, size_of=len)
    held.put("a", b"1234")
    held.put("b", b"1234")
    assert held.get("a") == b"1234"  # a is now the most recently used
    held.put("c", b"1234")  # 12 bytes > 10: b (least recently used) goes
    assert held.keys() == ["a", "c"]
    assert held.nbytes == 8


def test_the_newest_entry_stays_even_alone_over_the_bound() -> None:
    held: Held[str, bytes] = Held("t", max_bytes=3, size_of=len)
    held.put("a", b"12")
    held.put("big", b"123456")
    assert held.keys() == ["big"]


def test_count_bound() -> None:
    held: Held[int, int] = Held("t", max_bytes=10**9, size_of=lambda v: 1, max_entries=2)
    for i in range(4):
        held.put(i, i)
    assert held.keys() == [2, 3]


def test_one_build_per_key_while_others_wait() -> None:
    held: Held[str, object] = Held("t", max_bytes=10**6, size_of=lambda v: 1)
    started = threading.Event()
    release = threading.Event()
    builds: list[int] = []

    def build() -> object:
        builds.append(1)
        started.set()
        release.wait(10)
        return object()

    results: list[object] = []
    first = threading.Thread(target=lambda: results.append(held.get_or_build("k", build)))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: results.append(held.get_or_build("k", build)))
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert len(builds) == 1
    assert results[0] is results[1]


def test_a_failed_build_is_not_remembered() -> None:
    held: Held[str, str] = Held("t", max_bytes=100, size_of=len)

    def broken() -> str:
        raise ValueError("no")

    with pytest.raises(ValueError):
        held.get_or_build("k", broken)
    assert held.get_or_build("k", lambda: "fixed") == "fixed"


def test_idle_entries_are_released_and_recent_ones_kept() -> None:
    held: Held[str, bytes] = Held("t", max_bytes=100, size_of=len, max_idle_s=60)
    held.put("old", b"1234")
    held.put("new", b"12")
    used = dict(held._used)
    # "old" was last used 61 s before "now"; "new" 1 s before.
    now = used["new"] + 1
    held._used["old"] = now - 61
    assert release_idle(now) >= 4
    assert held.keys() == ["new"]
    assert held.nbytes == 2


def test_holders_without_idle_limit_keep_everything() -> None:
    held: Held[str, bytes] = Held("t", max_bytes=100, size_of=len)
    held.put("a", b"1")
    assert held.reap(now=10**12) == 0
    assert "a" in held


def test_release_hooks_run_on_every_tick_and_a_failing_one_stops_nothing(monkeypatch) -> None:
    from engine.store import held as module
    from engine.store.held import add_release_hook

    monkeypatch.setattr(module, "_RELEASE_HOOKS", [])  # this test's hooks only

    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("a front end's hook failed")

    def fine() -> None:
        calls.append("fine")

    add_release_hook(broken)
    add_release_hook(fine)
    add_release_hook(fine)  # registered once
    held: Held[str, bytes] = Held("t", max_bytes=100, size_of=len, max_idle_s=0)
    held.put("a", b"1")
    assert release_idle() >= 1  # the holder still released its entry
    assert calls == ["broken", "fine"]
