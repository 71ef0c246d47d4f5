"""OBS as a chat source and as an output of the world's events.

OBS -> world: a program scene switch, a custom event (a Stream Deck's or a
script's ``BroadcastCustomEvent``) and a hotkey (shown through an item of the
hidden controls scene) become the commands the config maps them to, sent as the
broadcaster from platform ``obs`` through the same pipeline as chat. Each comes
once: the link reads OBS's events on its own thread and hands them over here,
and they are directed one after another, in order.

World -> OBS: the config's ``on_world`` rules switch scenes, show or hide
sources and set text sources when the world's events match. Each target changes
at most every ``min_interval`` seconds and the newest change wins, so a chat
flood cannot make OBS flicker; a change OBS refuses is logged once per target.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from engine import EventApplied, FrozenChanged, Role, Subscription

from ..chat import ChatMessage, Deliver
from ..messages import Moment, ModeChanged, ObsStatus, VoteClosed, VoteCounted, VoteOpened
from ..words import in_words
from .config import WORLD_FACTS, ObsConfig, WorldRule
from .errors import ObsError, ObsRequestError
from .link import ObsLink, Requests
from .setup import CONTROLS_SCENE, Setup, set_up, stop_virtual_camera

__all__ = ["ObsSource", "world_facts"]

log = logging.getLogger(__name__)

WORLD_TYPES = ("vote_opened", "vote_counted", "vote_closed", "mode", "frozen", "moment", "event_applied")
OWN_SWITCH_SECONDS = 2.0  # a scene change OBS reports this soon after we made it is ours, not the streamer's
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def world_facts(message: Any) -> list[tuple[str, dict[str, str]]]:
    """What a stream message says, as (``when``, facts) pairs for the world rules."""
    facts: list[tuple[str, dict[str, Any]]] = []
    if isinstance(message, VoteOpened):
        facts.append(("vote_opened", {"options": " / ".join(f"#{o.number} {o.text}" for o in message.options),
                                      "seconds": round(message.seconds_left)}))
    elif isinstance(message, VoteCounted):
        leader = message.leader
        facts.append(("vote_tick", {"leader": leader.text if leader else "", "votes": leader.votes if leader else 0,
                                    "total": message.total, "seconds": round(message.seconds_left)}))
    elif isinstance(message, VoteClosed):
        facts.append(("vote_closed", {"winner": message.winner or "", "total": message.total}))
    elif isinstance(message, ModeChanged):
        facts.append(("mode", {"mode": message.mode, "user": message.by.user}))
    elif isinstance(message, FrozenChanged):
        facts.append(("frozen", {"frozen": "on" if message.frozen else "off", "user": message.by.user}))
    elif isinstance(message, Moment):
        facts.append(("moment", {"kind": message.kind, "user": message.user, "summary": message.summary,
                                 "amount": message.amount, "title": message.title}))
    elif isinstance(message, EventApplied):
        event, action = message.event, message.event.action
        said = {"user": event.source.user, "summary": in_words(event, message.subject)}
        facts.append(("applied", said))
        own: dict[str, dict[str, Any]] = {
            "weather": {"weather": getattr(action, "weather", None)},
            "time": {"hour": getattr(action, "hour", None)},
            "camera": {"op": getattr(action, "op", None)},
            "spawn": {"kind": getattr(action, "kind", None), "name": getattr(action, "name", None)},
            "scene": {"backdrop": getattr(action, "backdrop", None), "ground": getattr(action, "ground", None)},
            "lock": {"scope": getattr(action, "scope", None), "target": getattr(action, "target", None)},
            "unlock": {"scope": getattr(action, "scope", None), "target": getattr(action, "target", None)},
        }
        if action.type in own:
            facts.append((action.type, {**own[action.type], **said}))
    return [(when, {name: _fmt(value) for name, value in found.items()}) for when, found in facts]


def _matches(rule: WorldRule, facts: dict[str, str]) -> bool:
    if rule.is_ is None:
        return True
    first = WORLD_FACTS[rule.when][0]
    return facts.get(first, "").casefold() == rule.is_.casefold()


class ObsSource:
    """Runs the link to OBS for the product's lifetime (``run``)."""

    name = "obs"

    def __init__(self, config: ObsConfig, *, obs_input: str, overlay_pages: dict[str, str] | None = None,
                 publish: Callable[[Any], Any] = lambda message: None,
                 subscribe: Callable[..., Subscription] | None = None) -> None:
        self.config = config
        self.obs_input = obs_input
        self.overlay_pages = overlay_pages or {}
        self._publish = publish
        self._subscribe = subscribe
        self.setup: Setup | None = None
        self.link: ObsLink | None = None
        self.state, self.detail = "stopped", ""
        self.directed = 0  # commands OBS sent that reached the pipeline
        self._inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._pending: dict[str, tuple[str, Callable[[Requests], Any]]] = {}  # target -> (what, change): newest wins
        self._next_change: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._own_switch: tuple[str, float] | None = None
        self._warned: set[str] = set()

    @property
    def status(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self.detail, "setup": self.setup.lines if self.setup else [],
                "overlay_urls": self.setup.overlay_urls if self.setup else {}}

    async def run(self, deliver: Deliver) -> None:
        loop = asyncio.get_running_loop()

        def on_event(kind: str, data: dict[str, Any]) -> None:  # the event thread
            loop.call_soon_threadsafe(self._inbox.put_nowait, (kind, data))

        def on_state(state: str, detail: str) -> None:  # the link thread
            loop.call_soon_threadsafe(self._state_changed, state, detail)

        self.link = ObsLink(self.config, on_event=on_event, on_connected=self._set_up, on_state=on_state)
        self.link.start()
        workers = [self._direct(deliver), self._drive()]
        if self._subscribe is not None and self.config.on_world:
            workers.append(self._watch_world())
        tasks = [asyncio.create_task(w) for w in workers]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                if not task.cancelling():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.config.virtual_camera and self.link.state == "connected":
                try:
                    await asyncio.wait_for(self.link.call(stop_virtual_camera), 5)
                except (ObsError, asyncio.TimeoutError):
                    pass
            await self.link.stop()

    def _set_up(self, requests: Requests) -> None:
        """On the link thread, after every connect (OBS may have restarted with nothing)."""
        self.setup = set_up(requests, self.config, self.obs_input, self.overlay_pages)
        for line in self.setup.lines:
            log.info("OBS: %s", line)

    def _state_changed(self, state: str, detail: str) -> None:
        self.state, self.detail = state, detail
        self._publish(ObsStatus(state=state, detail=detail))
        if state == "connected":
            self._wake.set()  # changes held while OBS was away go out now

    # -- OBS -> world ---------------------------------------------------------------------

    def _commands_for(self, kind: str, data: dict[str, Any]) -> tuple[str, list[str]]:
        if kind == "CurrentProgramSceneChanged":
            scene = str(data.get("sceneName", ""))
            own, self._own_switch = self._own_switch, None
            if own is not None and own[0] == scene and time.monotonic() - own[1] < OWN_SWITCH_SECONDS:
                return scene, []  # the world switched it: not a direction
            return f"scene {scene!r}", self.config.on_scene.get(scene, [])
        if kind == "CustomEvent":
            name = str(data.get("event") or data.get("name") or "")
            return f"custom event {name!r}", self.config.on_custom_event.get(name, [])
        if kind == "SceneItemEnableStateChanged" and data.get("sceneName") == CONTROLS_SCENE and data.get(
                "sceneItemEnabled"):
            name = self.setup.controls.get(int(data.get("sceneItemId", -1))) if self.setup else None
            if name is None:
                return "", []
            self._hide_control(int(data["sceneItemId"]))
            return f"control {name!r}", self.config.controls.get(name, [])
        return "", []

    def _hide_control(self, item: int) -> None:
        """A hotkey shows the control's item; hiding it again lets the next press count too."""
        assert self.link is not None
        change = lambda r: r.send("SetSceneItemEnabled", {"sceneName": CONTROLS_SCENE, "sceneItemId": item,  # noqa: E731
                                                          "sceneItemEnabled": False})
        task = asyncio.ensure_future(self.link.call(change))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # OBS gone: setup hides it on reconnect

    async def _direct(self, deliver: Deliver) -> None:
        while True:
            kind, data = await self._inbox.get()
            what, commands = self._commands_for(kind, data)
            for command in commands:
                message = ChatMessage(user="OBS", text=command, role=Role.BROADCASTER, platform="obs")
                try:
                    result = await deliver(message)
                except Exception:
                    log.exception("OBS: %s -> %s failed", what, command)
                    continue
                self.directed += 1
                if result.status != "applied":
                    log.info("OBS: %s -> %s: %s", what, command, result.reply or result.status)

    # -- world -> OBS ---------------------------------------------------------------------

    async def _watch_world(self) -> None:
        assert self._subscribe is not None
        subscription = self._subscribe(WORLD_TYPES)
        try:
            while True:
                for item in await subscription.next(timeout=None):
                    for when, facts in world_facts(item.message):
                        for rule in self.config.on_world:
                            if rule.when == when and _matches(rule, facts):
                                self._plan(rule, facts)
        finally:
            subscription.close()

    def _plan(self, rule: WorldRule, facts: dict[str, str]) -> None:
        if rule.switch_scene is not None:
            scene = rule.switch_scene
            target, what = "scene", f"switch to {scene!r}"

            def change(requests: Requests) -> None:
                self._own_switch = (scene, time.monotonic())
                requests.send("SetCurrentProgramScene", {"sceneName": scene})
        elif rule.text_source is not None:
            source = rule.text_source
            text = _PLACEHOLDER.sub(lambda m: facts.get(m[1], ""), rule.text or "")
            target, what = f"text:{source}", f"text of {source!r}"

            def change(requests: Requests) -> None:
                requests.send("SetInputSettings", {"inputName": source, "inputSettings": {"text": text},
                                                   "overlay": True})
        else:
            source = rule.show or rule.hide or ""
            enabled = rule.show is not None
            target, what = f"visible:{source}", f"{'show' if enabled else 'hide'} {source!r}"

            def change(requests: Requests) -> None:
                current = requests.send("GetCurrentProgramScene").get("currentProgramSceneName", "")
                for scene in dict.fromkeys((current, self.config.scene)):
                    try:
                        item = requests.send("GetSceneItemId", {"sceneName": scene, "sourceName": source})
                    except ObsRequestError:
                        continue
                    requests.send("SetSceneItemEnabled", {"sceneName": scene, "sceneItemId": item["sceneItemId"],
                                                          "sceneItemEnabled": enabled})
                    return
                raise ObsRequestError("GetSceneItemId", 600, f"no source {source!r} in the program scene or "
                                                             f"{self.config.scene!r}")
        self._pending[target] = (what, change)
        self._wake.set()

    async def _drive(self) -> None:
        """Send the planned changes, each target at most every ``min_interval``, the newest winning."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                if self.link is None or self.link.state != "connected":
                    break  # held until OBS is back (the newest change per target is kept)
                now = time.monotonic()
                due = [t for t in self._pending if self._next_change.get(t, 0.0) <= now]
                if not due:
                    await asyncio.sleep(min(self._next_change[t] for t in self._pending) - now)
                    continue
                for target in due:
                    what, change = self._pending.pop(target)
                    self._next_change[target] = now + self.config.min_interval
                    try:
                        await self.link.call(change)
                        self._warned.discard(target)
                    except ObsRequestError as error:
                        if target not in self._warned:
                            log.warning("OBS: could not %s: %s", what, error)
                            self._warned.add(target)
                    except ObsError:
                        self._pending.setdefault(target, (what, change))  # OBS went away: try again when back
                        break
