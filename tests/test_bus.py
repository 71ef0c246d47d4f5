"""The event stream's bus: ordered, bounded per reader, never held up by a reader."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from engine import Bus, BusClosed, DirectionEvent, EventApplied, Gap, SetWeather, TakeSaved

SNOW = DirectionEvent.of(SetWeather(weather="snow"), "kim")


def take(n: int) -> TakeSaved:
    return TakeSaved(name=f"t{n}", line="main", tick=n)


def test_readers_get_every_message_in_order_with_its_sequence() -> None:
    bus = Bus(capacity=100)
    first, second = bus.subscribe(), bus.subscribe()
    for n in range(5):
        assert bus.publish(take(n)) == n + 1
    for reader in (first, second):
        items = reader.poll()
        assert [item.seq for item in items] == [1, 2, 3, 4, 5]
        assert [item.message.name for item in items] == ["t0", "t1", "t2", "t3", "t4"]
        assert reader.poll() == []  # read once
    # The wire form is made once and shared; it is the message's own JSON.
    item = first.bus._ring[0]
    assert item.json() is item.json()
    assert json.loads(item.json())["type"] == "take_saved"


def test_a_reader_that_never_reads_loses_only_its_own_oldest_and_is_told_how_many() -> None:
    # A minute of a busy stream (30 frames a second, ten messages each) against a
    # reader that never reads: the bus holds its capacity and no more, publishing
    # never waits, and a reader that keeps up misses nothing.
    bus = Bus(capacity=1000)
    dead = bus.subscribe()
    small = bus.subscribe(limit=10)
    live = bus.subscribe()
    seen: list[int] = []
    total = 60 * 30 * 10
    for n in range(total):
        bus.publish(take(n))
        if n % 100 == 99:
            seen += [item.seq for item in live.poll()]
    seen += [item.seq for item in live.poll()]
    assert seen == list(range(1, total + 1))
    assert live.missed == 0
    assert len(bus._ring) == 1000

    items = dead.poll()
    assert isinstance(items[0].message, Gap) and items[0].seq == 0
    assert items[0].message.missed == total - 1000 == dead.missed
    assert [item.seq for item in items[1:]] == list(range(total - 999, total + 1))

    items = small.poll()
    assert items[0].message.missed == total - 10
    assert [item.message.name for item in items[1:]] == [f"t{n}" for n in range(total - 10, total)]
    # Caught up: nothing more is lost.
    bus.publish(take(total))
    assert [item.seq for item in small.poll()] == [total + 1]


def test_a_reader_keeps_only_the_types_it_asked_for() -> None:
    bus = Bus()
    events = bus.subscribe(types={"event_applied"})
    bus.publish(take(1))
    bus.publish(EventApplied(event=SNOW))
    bus.publish(take(2))
    items = events.poll()
    assert [item.type for item in items] == ["event_applied"]
    assert items[0].message.event.id == SNOW.id and items[0].seq == 2


def test_a_reader_resumes_after_the_last_sequence_it_saw() -> None:
    bus = Bus(capacity=5)
    for n in range(3):
        bus.publish(take(n))
    assert [item.seq for item in bus.subscribe(after=1).poll()] == [2, 3]
    for n in range(3, 10):
        bus.publish(take(n))
    # Further back than the ring reaches: told how many it lost, then the rest.
    items = bus.subscribe(after=2).poll()
    assert items[0].message.missed == 3
    assert [item.seq for item in items[1:]] == [6, 7, 8, 9, 10]
    assert bus.subscribe().poll() == []  # a new reader starts from now


@pytest.mark.asyncio
async def test_next_wakes_on_a_message_published_from_another_thread() -> None:
    bus = Bus()
    reader = bus.subscribe()
    assert await reader.next(timeout=0.05) == []
    timer = threading.Timer(0.05, lambda: bus.publish(take(1)))
    timer.start()
    items = await asyncio.wait_for(reader.next(), 5)
    assert [item.seq for item in items] == [1]
    timer.join()


@pytest.mark.asyncio
async def test_closing_the_bus_or_a_reader_ends_its_wait() -> None:
    bus = Bus()
    one, two = bus.subscribe(), bus.subscribe()
    waiting = asyncio.create_task(one.next())
    await asyncio.sleep(0.01)
    one.close()
    with pytest.raises(BusClosed):
        await asyncio.wait_for(waiting, 5)
    bus.publish(take(1))  # the other reader is untouched
    assert [item.seq for item in await two.next(timeout=1)] == [1]
    waiting = asyncio.create_task(two.next())
    await asyncio.sleep(0.01)
    bus.close()
    with pytest.raises(BusClosed):
        await asyncio.wait_for(waiting, 5)
    assert bus.publish(take(2)) == 0  # nothing goes on a closed bus


def test_a_reader_far_behind_gets_the_same_messages_from_the_packed_ring() -> None:
    # Past the newest LIVE_ITEMS the ring holds messages pickled, off the garbage
    # collector's books; a reader that far behind must not notice.
    from engine.bus import LIVE_ITEMS

    bus = Bus(capacity=LIVE_ITEMS * 3)
    behind = bus.subscribe(types=["event_applied", "take_saved"])
    sent = []
    for n in range(LIVE_ITEMS * 2):
        message = take(n) if n % 2 else EventApplied(event=SNOW.model_copy(update={"tick": n}))
        sent.append(message)
        bus.publish(message)
    packed = [item for item in bus._ring if item._message is None]
    assert len(packed) == LIVE_ITEMS  # the oldest half, and only those
    items = behind.poll()
    assert [item.seq for item in items] == list(range(1, LIVE_ITEMS * 2 + 1))
    assert [item.message for item in items] == sent
    assert [item.type for item in items] == [m.type for m in sent]
    assert json.loads(items[0].json()) == json.loads(sent[0].model_dump_json())
