"""SIGKILL the running product at random moments while chat commands flow.

After every kill: the store opens cleanly, every acknowledged event is in the
journal exactly once, the world restored from snapshots equals the plain fold
of the journal, and the restarted product shows that same world.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import Streambot
from engine.scene import SceneSpec
from engine.store import Store, copy_store

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "crash-test-token-0123456789"
KILLS_PER_RUN = 6
RUNS = 4  # 24 kills in all

pytestmark = pytest.mark.timeout(600)


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "stream.yaml"
    path.write_text(
        f"server: {{port: 0, token: {TOKEN}}}\n"
        "video: {width: 256, height: 144, fps: 30}\n"
        "outputs: {mpegts: {enabled: false}, webrtc: {enabled: false}}\n"
        "scene: {seed: 3, characters: [{name: Ada, x: 12}, {name: Mochi, kind: cat, x: 16}]}\n"
        f"store: {{path: {tmp_path / 'world.db'}, snapshot_seconds: 1}}\n"
    )
    return path


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def commands(rng: random.Random, n: int) -> str:
    name = f"c{n}"
    return rng.choice([
        f"!spawn {rng.choice(['cat', 'dog', 'frog', 'robot'])} {name}",
        f"!move Ada {rng.choice(['left', 'right'])} {rng.randint(1, 5)}",
        f"!weather {rng.choice(['rain', 'snow', 'fog', 'clear', 'storm'])}",
        f"!say @Mochi hello {n}",
        f"!recolor Ada #{rng.randrange(0x1000000):06x}",
        f"!time {rng.randint(0, 23)}",
        f"!camera pan {rng.choice([-2, 2])}",
        "!jump Mochi",
        f"!take save t{n}",
    ])


class Chatter(threading.Thread):
    """Sends commands as fast as they are answered; remembers what was acknowledged."""

    def __init__(self, url: str, rng: random.Random, counter: list[int]) -> None:
        super().__init__(daemon=True)
        self.url, self.rng, self.counter = url, rng, counter
        self.acked_events: list[str] = []
        self.acked_takes: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.counter[0] += 1
            text = commands(self.rng, self.counter[0])
            try:
                result = post(self.url + "api/chat", {"user": "mod", "text": text, "roles": ["moderator"]})
            except (urllib.error.URLError, ConnectionError, OSError):
                return  # the product is gone
            if result["status"] == "applied":
                self.acked_events.append(result["events"][0]["id"])
            elif result["status"] == "info" and result["reply"].startswith("saved take"):
                self.acked_takes.append(text.split()[-1])


def check_store(path: Path, tmp_path: Path, acked_events: list[str], acked_takes: list[str]) -> dict:
    store = Store.open(path, SceneSpec(), 30, create=False)  # refuses a damaged file
    with sqlite3.connect(path) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM events")]
    assert len(ids) == len(set(ids)), "an event was journaled twice"
    missing = set(acked_events) - set(ids)
    assert not missing, f"{len(missing)} acknowledged events were lost"
    takes = {t.name for t in store.takes()}
    assert set(acked_takes) <= takes, f"acknowledged takes lost: {set(acked_takes) - takes}"
    restored = store.restore()
    bare_path = tmp_path / "bare.db"
    bare_path.unlink(missing_ok=True)
    copy_store(path, bare_path)
    with sqlite3.connect(bare_path) as db:
        db.execute("DELETE FROM snapshots")
    bare = Store.open(bare_path, SceneSpec(), 30, create=False)
    assert bare.restore(tick=restored.tick).to_dict() == restored.to_dict(), "snapshots disagree with the journal"
    store.close()
    bare.close()
    return restored.to_dict()


@pytest.mark.parametrize("run", range(RUNS))
def test_sigkill_loses_nothing_acknowledged(tmp_path: Path, run: int) -> None:
    rng = random.Random(1000 + run)
    config = write_config(tmp_path)
    counter = [0]
    all_acked: list[str] = []
    all_takes: list[str] = []
    expected: dict | None = None
    for _ in range(KILLS_PER_RUN):
        product = Streambot("run", "-c", str(config), "--no-stdin")
        url = product.url
        if expected is not None:
            # The restarted product shows the world the store held.
            state = get(url + "api/state")
            assert state["tick"] >= expected["tick"]
            assert [(e["id"], e["name"], e["identity"]) for e in state["entities"]] == [
                (e["id"], e["name"], json.loads(json.dumps(e["identity"]))) for e in expected["entities"]
            ]
            assert state["env"]["weather"] == expected["env"]["weather"]
        chatter = Chatter(url, rng, counter)
        chatter.start()
        time.sleep(rng.uniform(0.2, 1.5))
        assert product.stop(signal.SIGKILL, timeout=10) == -signal.SIGKILL
        chatter.join(timeout=10)
        all_acked += chatter.acked_events
        all_takes += chatter.acked_takes
        expected = check_store(tmp_path / "world.db", tmp_path, all_acked, all_takes)
    assert len(all_acked) > 20, "too few commands went through to mean anything"
