"""Name tags, speech bubbles and the sleeper's "Zz": text rasterised by Pillow.

Pillow's bundled scalable font (``ImageFont.load_default(size=...)``, Pillow >= 10.1)
keeps the renderer free of system fonts. Rasterising text costs ~0.3 ms a string,
so every picture here is cached by its inputs and built once per distinct text.
Shapes are drawn supersampled for smooth corners; glyphs at their final size so
the font's own anti-aliasing stays crisp.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .art import INK, RGB, SS, _downsample

TAG_BG: RGB = (20, 20, 32)
BUBBLE_BG: RGB = (255, 255, 250)
BUBBLE_TEXT: RGB = (36, 30, 48)


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=1024)
def text_mask(text: str, size: int, stroke: int = 0) -> np.ndarray:
    """(h, w) uint8 coverage of ``text`` (with a ``stroke``-pixel halo when > 0),
    tight to the font's line box so lines of one size align."""
    f = font(size)
    ascent, descent = f.getmetrics()
    w = int(np.ceil(f.getlength(text))) + 2 * stroke + 2
    h = ascent + descent + 2 * stroke
    img = Image.new("L", (max(1, w), max(1, h)), 0)
    ImageDraw.Draw(img).text((stroke + 1, stroke), text, font=f, fill=255, stroke_width=stroke, stroke_fill=255)
    return np.asarray(img).copy()


def wrap(text: str, size: int, max_width: int) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels; over-long words are cut."""
    f = font(size)
    lines: list[str] = []
    line = ""
    for word in text.split():
        while f.getlength(word) > max_width and len(word) > 1:
            cut = len(word)
            while cut > 1 and f.getlength(word[:cut]) > max_width:
                cut -= 1
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:cut])
            word = word[cut:]
        candidate = f"{line} {word}" if line else word
        if f.getlength(candidate) <= max_width:
            line = candidate
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines or [""]


def _paint(img: Image.Image, mask: np.ndarray, colour: RGB, x: int, y: int) -> None:
    layer = Image.new("RGBA", (mask.shape[1], mask.shape[0]), colour + (0,))
    layer.putalpha(Image.fromarray(mask, "L"))
    img.alpha_composite(layer, (x, y))


def tag_image(name: str, size: int, dot: RGB) -> tuple[Image.Image, float, float]:
    """A dark rounded pill with a colour dot (the character's outfit) and the
    name in white. Anchor: bottom centre."""
    mask = text_mask(name, size)
    pad_x, pad_y = int(size * 0.5), int(size * 0.18)
    dot_r = max(2, int(size * 0.24))
    w = mask.shape[1] + 2 * pad_x + 2 * dot_r + int(size * 0.3)
    h = mask.shape[0] + 2 * pad_y
    big = Image.new("RGBA", (w * SS, h * SS), (0, 0, 0, 0))
    d = ImageDraw.Draw(big)
    d.rounded_rectangle([0, 0, w * SS - 1, h * SS - 1], h * SS // 2, fill=TAG_BG + (190,))
    cx, cy = (pad_x + dot_r) * SS, h * SS / 2
    r = dot_r * SS
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=dot + (255,), outline=(255, 255, 255, 255), width=SS)
    img = _downsample(big, SS)
    _paint(img, mask, (255, 255, 255), pad_x + 2 * dot_r + int(size * 0.3) - 1, pad_y)
    return img, w / 2, h


def bubble_image(text: str, size: int, max_width: int) -> tuple[Image.Image, float, float]:
    """A white speech bubble with a tail; dark word-wrapped text. Anchor: the tip
    of the tail."""
    lines = wrap(text, size, max_width)
    masks = [text_mask(line, size) for line in lines]
    line_h = int(size * 1.2)
    pad = int(size * 0.55)
    tail = int(size * 0.7)
    border = max(1, size // 10)
    w = max(m.shape[1] for m in masks) + 2 * pad
    h = line_h * (len(lines) - 1) + masks[0].shape[0] + 2 * pad - int(size * 0.15)
    big = Image.new("RGBA", ((w + 2 * border) * SS, (h + tail + 2 * border) * SS), (0, 0, 0, 0))
    d = ImageDraw.Draw(big)
    b = border * SS
    box = [b, b, b + w * SS, b + h * SS]
    cx = big.size[0] / 2
    tail_pts = [(cx - tail * 0.7 * SS, b + h * SS - 2 * SS), (cx + tail * 0.3 * SS, b + h * SS - 2 * SS),
                (cx - tail * 0.15 * SS, b + (h + tail) * SS)]
    # ink pass a border wider, then the fill, so the tail joins the box seamlessly
    d.rounded_rectangle([box[0] - b, box[1] - b, box[2] + b, box[3] + b], int(size * 0.7 * SS) + b, fill=INK + (255,))
    d.polygon(_grow(tail_pts, b), fill=INK + (255,))
    d.rounded_rectangle(box, int(size * 0.7 * SS), fill=BUBBLE_BG + (255,))
    d.polygon(tail_pts, fill=BUBBLE_BG + (255,))
    img = _downsample(big, SS)
    y = border + pad - int(size * 0.1)
    for m in masks:
        _paint(img, m, BUBBLE_TEXT, border + (w - m.shape[1]) // 2, y)
        y += line_h
    return img, img.size[0] / 2 - tail * 0.15, img.size[1] - 1


def _grow(pts: list[tuple[float, float]], by: float) -> list[tuple[float, float]]:
    cx = sum(p[0] for p in pts) / len(pts)
    cy = sum(p[1] for p in pts) / len(pts)
    out = []
    for x, y in pts:
        dx, dy = x - cx, y - cy
        n = max(1e-6, (dx * dx + dy * dy) ** 0.5)
        out.append((x + dx / n * by * 1.8, y + dy / n * by * 1.8))
    return out


def glyph_image(text: str, size: int, colour: RGB, opacity: float) -> tuple[Image.Image, float, float]:
    """Outlined text (the sleeper's "Z"), anchor at its centre."""
    stroke = max(1, size // 9)
    halo = text_mask(text, size, stroke)
    core = text_mask(text, size, 0)
    img = Image.new("RGBA", (halo.shape[1], halo.shape[0]), (0, 0, 0, 0))
    _paint(img, halo, INK, 0, 0)
    _paint(img, core, colour, stroke, stroke)
    if opacity < 1:
        a = np.asarray(img.getchannel("A"), dtype=np.float32) * opacity
        img.putalpha(Image.fromarray(a.astype(np.uint8), "L"))
    return img, img.size[0] / 2, img.size[1] / 2
