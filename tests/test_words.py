"""Applied commands in words, for the overlays."""

from __future__ import annotations

import pytest

from engine import DirectionEvent
from engine.events import (
    Act, CameraMove, Freeze, Lock, Move, Recolor, Remove, Rename, Reset, Say, SetScene, SetTime, SetWeather, Spawn,
    Unfreeze, Unlock, Wear,
)
from streambot.words import in_words


def said(action, subject=None, user="kim") -> str:
    return in_words(DirectionEvent.of(action, user), subject)


@pytest.mark.parametrize(("action", "subject", "words"), [
    (Spawn(kind="dragon", name="Zed"), None, "kim summoned a dragon called Zed"),
    (Spawn(kind="cat"), None, "kim summoned a cat"),
    (Spawn(kind="house"), None, "kim placed a house"),
    (Remove(target="Zed"), None, "kim sent Zed away"),
    (Move(by=-2), "Zed", "kim walked Zed left"),
    (Move(to=5, run=True, target="Ada"), None, "kim ran Ada across the stage"),
    (Act(action="jump"), "Zed", "kim made Zed jump"),
    (Act(action="sit", target="Ada"), None, "kim made Ada sit down"),
    (Rename(target="Zed", name="Zara"), None, "kim renamed Zed to Zara"),
    (Recolor(color="#ff0000"), "Zed", "kim dressed Zed in #ff0000"),
    (Wear(hat="tophat"), "Zed", "kim gave Zed a tophat"),
    (Wear(hat="none"), "Zed", "kim took Zed's hat off"),
    (SetWeather(weather="snow"), None, "kim made it snow"),
    (SetTime(hour=0), None, "kim turned the clock to midnight"),
    (SetTime(hour=18.5), None, "kim turned the clock to 18:30"),
    (CameraMove(op="follow", target="Zed"), None, "kim pointed the camera at Zed"),
    (CameraMove(op="shake", value=2), None, "kim shook the camera"),
    (SetScene(ground="sand", backdrop="city"), None, "kim changed the set: sand underfoot and city behind"),
    (Lock(scope="weather"), None, "kim locked the weather"),
    (Unlock(scope="identity", target="Zed"), None, "kim unlocked Zed's identity"),
    (Freeze(), None, "kim froze the world"),
    (Unfreeze(), None, "kim unfroze the world"),
    (Reset(), None, "kim reset the world"),
])
def test_every_action_reads_as_a_sentence(action, subject, words) -> None:
    assert said(action, subject) == words


def test_long_speech_is_cut_and_quoted() -> None:
    words = said(Say(text="a" * 80), "Zed")
    assert words.startswith("kim made Zed say “aaa") and words.endswith("…”") and len(words) < 100


def test_an_action_with_no_subject_still_names_someone() -> None:
    assert said(Act(action="wave")) == "kim made their character wave"
