"""Which recorded usage events a Redis data loss took: the pure part."""

from __future__ import annotations

from aichat_gateway.proxy.exposure import RecentEvents, Recorded, lost


def test_an_event_neither_settled_nor_in_the_new_stream_is_lost() -> None:
    recorded = [Recorded("a", "b1", 10, 0.0), Recorded("b", "b1", 20, 0.0), Recorded("c", "b2", 30, 0.0)]
    assert lost(recorded, settled=["a"], in_new_stream=["c"]) == [recorded[1]]


def test_nothing_is_lost_when_everything_settled() -> None:
    recorded = [Recorded("a", "b1", 10, 0.0)]
    assert lost(recorded, settled=["a"], in_new_stream=[]) == []


def test_taking_the_recent_events_forgets_them_and_drops_the_too_old() -> None:
    recent = RecentEvents(max_events=10, max_age=60.0)
    recent.add("old", "b", 1, at=0.0)
    recent.add("new", "b", 2, at=100.0)
    assert [e.request_id for e in recent.take(now=120.0)] == ["new"]
    assert recent.take(now=120.0) == []


def test_the_memory_is_bounded_by_count() -> None:
    recent = RecentEvents(max_events=2, max_age=60.0)
    for i in range(5):
        recent.add(str(i), "b", 1, at=0.0)
    assert [e.request_id for e in recent.take(now=1.0)] == ["3", "4"]


def test_old_events_are_forgotten_as_new_ones_arrive() -> None:
    recent = RecentEvents(max_events=100, max_age=60.0)
    recent.add("first", "b", 1, at=0.0)
    recent.add("second", "b", 1, at=61.0)
    assert len(recent) == 1
