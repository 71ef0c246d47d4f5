"""The creator's tools on a world store: takes, replays and exports.

These work on the store file alone, without the stream running: re-render any
stretch of any line to a video at any resolution, list and name takes, and
export a take as a video, its event list and the credits of who shaped it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from engine import Branch, Store, Take, make_backend, write_video

from .commands import describe
from .config import Config
from .director import VOTE_SOURCE


def open_store(config: Config) -> Store:
    return Store.open(config.store.path, config.scene, config.video.fps, create=False)


@dataclass(frozen=True)
class Stretch:
    """A stretch of a line: the frames from ``first`` to ``last`` tick."""

    branch: Branch
    first: int
    last: int


def stretch_of(store: Store, line: str | None = None, take: str | None = None,
               first: int | None = None, last: int | None = None) -> Stretch:
    """A take's stretch runs from the start of its line to the take; a line's
    from its start to its end. ``first``/``last`` narrow either."""
    if take is not None:
        chosen: Take = store.take(take)
        branch = store.branch(chosen.branch)
        end = chosen.tick
    else:
        branch = store.branch(line) if line is not None else store.current_branch()
        end = store.head(branch).tick
    start = branch.fork_tick + 1 if branch.parent is not None else 1
    first = start if first is None else max(first, 0)
    last = end if last is None else min(last, end)
    if last < first:
        raise ValueError(f"nothing to render: tick {first} is after tick {last}")
    return Stretch(branch, first, last)


def render(store: Store, stretch: Stretch, out: Path, width: int, height: int, device: str = "auto") -> int:
    backend = make_backend("deterministic", width, height, device=device, seed=store.scene.seed)
    with tqdm(total=stretch.last - stretch.first + 1, unit="frame", desc=out.name) as bar:
        return write_video(store, stretch.branch, stretch.first, stretch.last, backend, out, progress=bar.update)


def events_in(store: Store, stretch: Stretch, prefix: str = "!") -> list[dict[str, Any]]:
    head = store.head(stretch.branch)
    bounds = store.lineage(stretch.branch, head.seq, stretch.last)
    rows = []
    for _, event in store.events(bounds):
        # An event applied at tick t first shows in the frame of tick t + 1.
        if event.tick is None or not stretch.first - 1 <= event.tick < stretch.last:
            continue
        rows.append({
            "tick": event.tick,
            "seconds": round((event.tick + 1 - stretch.first) / store.tick_hz, 3),
            "time": event.time,
            "id": event.id,
            "user": event.source.user,
            "role": event.source.role.label,
            "platform": event.source.platform,
            "command": describe(event.action, prefix),
            "action": event.action.model_dump(mode="json"),
        })
    return rows


def credits(events: list[dict[str, Any]], title: str) -> str:
    by_user = Counter(e["user"] for e in events if e["user"] != VOTE_SOURCE.user)
    votes = sum(1 for e in events if e["user"] == VOTE_SOURCE.user)
    lines = [title, "", "Directed by the audience:"]
    lines += [f"  {user}  ({count} {'direction' if count == 1 else 'directions'})" for user, count in by_user.most_common()]
    if votes:
        lines.append(f"  ...and the whole chat, in {votes} {'vote' if votes == 1 else 'votes'}")
    if not by_user and not votes:
        lines.append("  (nobody yet)")
    return "\n".join(lines) + "\n"


def export(store: Store, take: str, directory: Path, width: int, height: int, prefix: str = "!") -> dict[str, Path]:
    chosen = store.take(take)
    stretch = stretch_of(store, take=take)
    directory.mkdir(parents=True, exist_ok=True)
    video = directory / f"{chosen.name}.mp4"
    render(store, stretch, video, width, height)
    events = events_in(store, stretch, prefix)
    events_path = directory / f"{chosen.name}.events.json"
    events_path.write_text(json.dumps({
        "take": chosen.to_dict(), "line": stretch.branch.name, "first_tick": stretch.first, "last_tick": stretch.last,
        "fps": store.tick_hz, "events": events,
    }, indent=2))
    credits_path = directory / f"{chosen.name}.credits.txt"
    title = f"{chosen.name}" + (f": {chosen.note}" if chosen.note else "")
    credits_path.write_text(credits(events, title))
    return {"video": video, "events": events_path, "credits": credits_path}
