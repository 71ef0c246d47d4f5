"""The world's vocabulary: every kind, action, hat, weather and colour it knows.

Both sides read this module: the engine to validate and draw, the bot to suggest
the closest word when a viewer misspells one.
"""

from __future__ import annotations

from typing import Final

# Characters: things with a name, an identity and actions.
CHARACTER_KINDS: Final = ("human", "cat", "dog", "robot", "ghost", "dragon", "frog")

# Props: parts of the set. They have an id, a position and a scale, nothing more.
PROP_KINDS: Final = ("tree", "pine", "house", "lamp", "castle", "rock", "flower", "fountain")

# Actions: ``ONE_SHOT`` ones end by themselves after ``ACTION_TICKS`` seconds.
ACTIONS: Final = ("idle", "walk", "run", "jump", "dance", "sleep", "fly", "wave", "sit", "spin")
ONE_SHOT_SECONDS: Final = {"jump": 0.8, "wave": 1.6, "spin": 1.0}

HATS: Final = ("none", "cap", "tophat", "crown", "beanie", "bow", "wizard")
PATTERNS: Final = ("plain", "stripes", "dots")

WEATHERS: Final = ("clear", "rain", "snow", "fog", "storm")
GROUNDS: Final = ("grass", "sand", "snow", "stone")
BACKDROPS: Final = ("hills", "mountains", "city", "forest")

# Named colours a viewer can ask for; hex (#rrggbb) is accepted as well.
COLORS: Final[dict[str, tuple[int, int, int]]] = {
    "red": (220, 50, 47),
    "orange": (245, 130, 32),
    "yellow": (245, 205, 40),
    "lime": (150, 215, 40),
    "green": (40, 160, 70),
    "teal": (30, 160, 150),
    "cyan": (60, 200, 230),
    "blue": (45, 100, 220),
    "navy": (30, 45, 120),
    "purple": (130, 60, 190),
    "pink": (240, 110, 170),
    "magenta": (210, 40, 160),
    "brown": (130, 80, 45),
    "black": (30, 30, 35),
    "grey": (130, 130, 135),
    "white": (240, 240, 235),
    "gold": (230, 180, 50),
}

# Palettes that identities are drawn from: skin tones and outfit colours chosen
# to stay distinguishable against every sky and ground.
SKIN_TONES: Final = (
    (255, 219, 172),
    (241, 194, 125),
    (224, 172, 105),
    (198, 134, 66),
    (141, 85, 36),
    (94, 58, 30),
)
OUTFIT_COLORS: Final = tuple(
    COLORS[name]
    for name in (
        "red", "orange", "yellow", "lime", "green", "teal", "cyan", "blue",
        "navy", "purple", "pink", "magenta", "brown", "white", "gold",
    )
)

# The stage, in world units. One unit is roughly a character's height.
WORLD_WIDTH: Final = 32.0
VIEW_WIDTH: Final = 16.0  # world units visible across the frame at zoom 1
MAX_ENTITIES: Final = 64  # on stage at once, by default (a world's own size: World.max_on_stage)
MAX_WINGS: Final = 1000  # characters kept in the wings; past this the longest gone leave for good
MAX_PROPS: Final = 48
MAX_NAME_LENGTH: Final = 20
MAX_SPEECH_LENGTH: Final = 80
TIME_OF_DAY_HOURS: Final = 24.0
