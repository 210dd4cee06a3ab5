"""``demo:shapes``: a generated, seeded, lazy dataset of captioned shapes.

Every attribute of every item (shape, colour, size, background, position, rotation, caption
template) is drawn up front with vectorised NumPy, so the columns of a million-item dataset cost
about a second; pixels are only rendered when ``load_image(i)`` asks for them.

Attributes are drawn in fixed-size chunks, each from its own generator seeded by
``(seed, chunk)``. That makes item ``i`` the same whatever ``n`` is (``n=1000`` is a prefix of
``n=2000``), and lets ``load_image`` seed the per-item texture noise from ``(seed, i)`` alone.
"""

from __future__ import annotations

import hashlib
import math
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from engine import settings
from engine.data.base import SkippedItem
from engine.errors import DatasetError, ItemError
from engine.params import SHAPES as DEFAULTS

if TYPE_CHECKING:
    import pandas as pd

# Bump whenever a change alters any pixel, caption or column: it is part of the fingerprint,
# so cached vectors of an older generator are never reused for the new one.
GENERATOR_VERSION = 1

MIN_ITEMS = 100
IMAGE_SIZE = 64


def max_items() -> int:
    """The largest ``n``: the items limit every dataset kind has (``PARALLAX_MAX_ITEMS``), read
    at call time so an operator who raised it can open a 10M-item demo for the big map."""
    return settings.MAX_ITEMS


_SUPERSAMPLE = 4  # masks are drawn at 4x and box-downsampled: cheap antialiasing
_CHUNK = 65_536

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "hexagon",
    "cross",
    "heart",
    "crescent",
)

# Saturated, well separated colours; every background below is kept far from each of them.
_COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (245, 215, 30),
    "purple": (140, 45, 185),
    "orange": (245, 130, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
COLOURS: tuple[str, ...] = tuple(_COLOUR_RGB)

SIZES: tuple[str, ...] = ("small", "medium", "large")
# Circumradius in pixels (of 64) for each size: ranges far enough apart to be told apart.
_SIZE_RADIUS: tuple[tuple[float, float], ...] = ((8.0, 10.0), (13.0, 16.0), (19.0, 23.0))

BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise", "stripes", "checker")
_BACKGROUND_WORD = {
    "plain": "plain",
    "gradient": "gradient",
    "noise": "noisy",
    "stripes": "striped",
    "checker": "checkered",
}
# Muted base tones for backgrounds; textures move at most _TEXTURE_AMPLITUDE around them.
_BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "light grey": (190, 190, 190),
    "dark grey": (70, 70, 70),
    "beige": (215, 200, 165),
    "slate": (90, 105, 125),
    "teal": (60, 130, 130),
    "navy": (35, 45, 90),
    "olive": (120, 125, 60),
    "pink": (225, 170, 185),
    "brown": (110, 80, 55),
}
BACKGROUND_COLOURS: tuple[str, ...] = tuple(_BACKGROUND_RGB)
_TEXTURE_AMPLITUDE = 28.0
# Shape colour and background base must be at least this far apart (Euclidean RGB): with the
# texture amplitude that leaves a clear margin, so the shape's colour is never ambiguous.
_MIN_CONTRAST = 125.0

# Caption templates; {a_*} carries the right article ("a"/"an") for the word that follows.
TEMPLATES: tuple[str, ...] = (
    "{a_size} {size} {colour} {shape}",
    "{colour} {shape}, {size}",
    "{a_shape} {shape} that is {colour}",
    "a picture of {a_size} {size} {colour} {shape}",
    "{size} shape: {colour} {shape}",
    "{a_colour} {colour} {shape} on {a_bg} {bg} background",
    "there is {a_size} {size} {shape} coloured {colour}",
    "{shape}, {colour}",
    "an image of {a_colour} {colour} {shape}",
    "{a_size} {size} {shape} in {colour}",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def fill_template(template: str, shape: str, colour: str, size: str, background: str) -> str:
    """Fill one caption template (also used by training code for its extra prompt styles)."""
    bg = _BACKGROUND_WORD[background]
    return template.format(
        shape=shape,
        colour=colour,
        size=size,
        bg=bg,
        a_shape=_article(shape),
        a_colour=_article(colour),
        a_size=_article(size),
        a_bg=_article(bg),
    )


def caption(template: int, shape: str, colour: str, size: str, background: str) -> str:
    """The caption of an item drawn with ``TEMPLATES[template]``."""
    return fill_template(TEMPLATES[template], shape, colour, size, background)


def _allowed_backgrounds() -> tuple[np.ndarray, np.ndarray]:
    """Per shape colour: the background tones far enough from it, padded; and their count."""
    colours = np.array(list(_COLOUR_RGB.values()), dtype=np.float64)
    tones = np.array(list(_BACKGROUND_RGB.values()), dtype=np.float64)
    dist = np.linalg.norm(colours[:, None, :] - tones[None, :, :], axis=-1)
    ok = dist >= _MIN_CONTRAST
    counts = ok.sum(axis=1)
    assert counts.min() >= 2, "every colour needs at least two usable background tones"
    table = np.zeros((len(colours), len(tones)), dtype=np.int64)
    for c in range(len(colours)):
        idx = np.flatnonzero(ok[c])
        table[c, : len(idx)] = idx
    return table, counts


_ALLOWED_BG, _ALLOWED_BG_COUNT = _allowed_backgrounds()


def _caption_table() -> np.ndarray:
    """Every possible caption, indexed [template, shape, colour, size, background].

    ~19k strings built once; a million captions are then one fancy-indexing lookup and share
    their string objects.
    """
    table = np.empty(
        (len(TEMPLATES), len(SHAPES), len(COLOURS), len(SIZES), len(BACKGROUNDS)), dtype=object
    )
    for t in range(len(TEMPLATES)):
        for h, shape in enumerate(SHAPES):
            for c, colour in enumerate(COLOURS):
                for s, size in enumerate(SIZES):
                    for b, background in enumerate(BACKGROUNDS):
                        table[t, h, c, s, b] = caption(t, shape, colour, size, background)
    return table


_CAPTIONS: np.ndarray | None = None


def _captions() -> np.ndarray:
    global _CAPTIONS
    if _CAPTIONS is None:
        _CAPTIONS = _caption_table()
    return _CAPTIONS


def _draw_columns(n: int, seed: int) -> dict[str, np.ndarray]:
    """All per-item attributes, drawn chunk by chunk (see the module docstring for why)."""
    parts: list[dict[str, np.ndarray]] = []
    for chunk in range(math.ceil(n / _CHUNK)):
        rng = np.random.default_rng([GENERATOR_VERSION, seed, chunk])
        m = _CHUNK  # always draw a full chunk so item values never depend on n
        shape = rng.integers(0, len(SHAPES), m, dtype=np.int8)
        colour = rng.integers(0, len(COLOURS), m, dtype=np.int8)
        size = rng.integers(0, len(SIZES), m, dtype=np.int8)
        background = rng.integers(0, len(BACKGROUNDS), m, dtype=np.int8)
        pick = (rng.random(m) * _ALLOWED_BG_COUNT[colour]).astype(np.int64)
        bg_colour = _ALLOWED_BG[colour, pick].astype(np.int8)
        template = rng.integers(0, len(TEMPLATES), m, dtype=np.int8)
        lo = np.array([r[0] for r in _SIZE_RADIUS], dtype=np.float32)[size]
        hi = np.array([r[1] for r in _SIZE_RADIUS], dtype=np.float32)[size]
        radius = lo + (hi - lo) * rng.random(m, dtype=np.float32)
        # Centre anywhere that keeps the whole shape (plus a 2 px margin) inside the image.
        span = IMAGE_SIZE - 2 * (radius + 2)
        cx = radius + 2 + span * rng.random(m, dtype=np.float32)
        cy = radius + 2 + span * rng.random(m, dtype=np.float32)
        rotation = 360.0 * rng.random(m, dtype=np.float32)
        parts.append(
            {
                "shape": shape,
                "colour": colour,
                "size": size,
                "background": background,
                "bg_colour": bg_colour,
                "template": template,
                "radius": radius,
                "cx": cx,
                "cy": cy,
                "rotation": rotation,
            }
        )
    return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}


# --- rendering -------------------------------------------------------------------------------


def polygon(cx: float, cy: float, radii: np.ndarray, rotation: float) -> list[tuple[float, float]]:
    """Vertices at equal angles with the given radii, rotated by ``rotation`` degrees."""
    k = len(radii)
    angles = np.deg2rad(rotation) + np.arange(k) * (2 * np.pi / k) - np.pi / 2
    xs = cx + radii * np.cos(angles)
    ys = cy + radii * np.sin(angles)
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def rotate(points: np.ndarray, cx: float, cy: float, rotation: float) -> list[tuple[float, float]]:
    """``points`` rotated by ``rotation`` degrees about the origin, then moved to (cx, cy)."""
    a = np.deg2rad(rotation)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    p = points @ rot.T + np.array([cx, cy])
    return [(float(x), float(y)) for x, y in p]


def heart_outline(r: float, points: int = 48) -> np.ndarray:
    """A heart of ``points`` vertices around the origin, ``r`` from its centre to its tip."""
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y + 2.5], axis=1)  # the curve spans y in [-12, 17]: re-centre it
    return pts * (r / 17.0)


def _shape_mask(shape: str, cx: float, cy: float, r: float, rotation: float) -> Image.Image:
    """An antialiased 64x64 coverage mask ("L") of one shape."""
    s = _SUPERSAMPLE
    big = Image.new("L", (IMAGE_SIZE * s, IMAGE_SIZE * s), 0)
    draw = ImageDraw.Draw(big)
    cx, cy, r = cx * s, cy * s, r * s
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "square":
        # Circumradius r: the square's half side is r / sqrt(2).
        draw.polygon(polygon(cx, cy, np.full(4, r), rotation), fill=255)
    elif shape == "triangle":
        draw.polygon(polygon(cx, cy, np.full(3, r), rotation), fill=255)
    elif shape == "hexagon":
        draw.polygon(polygon(cx, cy, np.full(6, r), rotation), fill=255)
    elif shape == "star":
        radii = np.tile([r, 0.42 * r], 5)
        draw.polygon(polygon(cx, cy, radii, rotation), fill=255)
    elif shape == "cross":
        w = 0.36 * r
        bar = np.array([[-r, -w], [r, -w], [r, w], [-r, w]])
        draw.polygon(rotate(bar, cx, cy, rotation), fill=255)
        draw.polygon(rotate(bar[:, ::-1], cx, cy, rotation), fill=255)
    elif shape == "heart":
        # Hearts keep roughly upright (+-30 degrees): upside down they read as something else.
        tilt = (rotation % 60.0) - 30.0
        draw.polygon(rotate(heart_outline(r), cx, cy, tilt), fill=255)
    elif shape == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        a = np.deg2rad(rotation)
        ox, oy = cx + 0.45 * r * np.cos(a), cy + 0.45 * r * np.sin(a)
        r2 = 0.85 * r
        draw.ellipse((ox - r2, oy - r2, ox + r2, oy + r2), fill=0)
    else:  # pragma: no cover - SHAPES and this function are kept in step
        raise AssertionError(shape)
    return big.reduce(s)


def _background(kind: str, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A float32 (64, 64, 3) background around ``base``, within +-_TEXTURE_AMPLITUDE."""
    amp = _TEXTURE_AMPLITUDE
    size = IMAGE_SIZE
    if kind == "plain":
        field = np.zeros((size, size), dtype=np.float32)
    elif kind == "noise":
        field = np.clip(rng.normal(0.0, 0.5, (size, size)), -1.0, 1.0).astype(np.float32)
    else:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        a = rng.uniform(0, np.pi)
        u = xx * np.cos(a) + yy * np.sin(a)
        if kind == "gradient":
            field = (u - u.min()) / max(float(u.max() - u.min()), 1e-6) * 2.0 - 1.0
        elif kind == "stripes":
            period = rng.uniform(5.0, 12.0)
            field = np.sign(np.sin(2 * np.pi * u / period)).astype(np.float32)
        elif kind == "checker":
            cell = int(rng.integers(4, 10))
            field = (((xx // cell) + (yy // cell)) % 2) * 2.0 - 1.0
        else:  # pragma: no cover
            raise AssertionError(kind)
    return base[None, None, :] + amp * field[:, :, None]


class ShapesDataset:
    """The ``demo:shapes`` dataset: ``n`` generated items, deterministic under ``seed``."""

    has_images = True

    def __init__(self, n: int = DEFAULTS.n, seed: int = DEFAULTS.seed) -> None:
        if isinstance(n, bool) or not isinstance(n, int | np.integer):
            raise DatasetError(f"demo:shapes: n must be an integer, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise DatasetError(f"demo:shapes: seed must be an integer, got {seed!r}")
        if not MIN_ITEMS <= n <= max_items():
            raise DatasetError(
                f"demo:shapes: n must be between {MIN_ITEMS:,} and {max_items():,} "
                f"(PARALLAX_MAX_ITEMS), got {n:,}"
            )
        if seed < 0:
            raise DatasetError(f"demo:shapes: seed must be >= 0, got {seed}")
        self.n = int(n)
        self.seed = int(seed)
        self.spec = f"demo:shapes?n={self.n}&seed={self.seed}"
        self.name = f"shapes ({self.n:,}, seed {self.seed})"
        self.skipped: list[SkippedItem] = []
        self.columns = _draw_columns(self.n, self.seed)
        c = self.columns
        self.ids: list[str] = [f"shapes-{i:06d}" for i in range(self.n)]
        self.labels: list[str | None] = np.array(SHAPES, dtype=object)[c["shape"]].tolist()
        self.texts: list[str | None] | None = _captions()[
            c["template"], c["shape"], c["colour"], c["size"], c["background"]
        ].tolist()

    def __len__(self) -> int:
        return self.n

    def attributes(self, index: int) -> dict[str, object]:
        """The named attributes of one item (handy for tests and for hover text)."""
        c = self.columns
        return {
            "shape": SHAPES[c["shape"][index]],
            "colour": COLOURS[c["colour"][index]],
            "size": SIZES[c["size"][index]],
            "background": BACKGROUNDS[c["background"][index]],
            "background_colour": BACKGROUND_COLOURS[c["bg_colour"][index]],
            "template": int(c["template"][index]),
        }

    def load_image(self, index: int) -> Image.Image:
        if not 0 <= index < self.n:
            raise ItemError(f"shapes: index {index} out of range 0..{self.n - 1}")
        c = self.columns
        # Texture parameters, noise and colour jitter come from (seed, index) alone, so an
        # image never depends on which other images were rendered before it.
        rng = np.random.default_rng([GENERATOR_VERSION, self.seed, index, 1])
        tone = np.array(_BACKGROUND_RGB[BACKGROUND_COLOURS[c["bg_colour"][index]]], np.float32)
        bg = _background(BACKGROUNDS[c["background"][index]], tone, rng)
        colour = np.array(_COLOUR_RGB[COLOURS[c["colour"][index]]], dtype=np.float32)
        colour = colour + rng.uniform(-12.0, 12.0, 3).astype(np.float32)
        mask = _shape_mask(
            SHAPES[c["shape"][index]],
            float(c["cx"][index]),
            float(c["cy"][index]),
            float(c["radius"][index]),
            float(c["rotation"][index]),
        )
        alpha = np.asarray(mask, dtype=np.float32)[:, :, None] / 255.0
        pixels = bg * (1.0 - alpha) + colour[None, None, :] * alpha
        return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")

    @cached_property
    def _metadata(self) -> pd.DataFrame:
        import pandas as pd

        c = self.columns
        return pd.DataFrame(
            {
                "colour": pd.Categorical.from_codes(c["colour"], categories=list(COLOURS)),
                "size": pd.Categorical.from_codes(c["size"], categories=list(SIZES)),
                "background": pd.Categorical.from_codes(
                    c["background"], categories=list(BACKGROUNDS)
                ),
                "background_colour": pd.Categorical.from_codes(
                    c["bg_colour"], categories=list(BACKGROUND_COLOURS)
                ),
                "template": c["template"].astype(np.int64),
            }
        )

    def metadata(self) -> pd.DataFrame:
        # A copy, so a caller adding columns cannot change what the next caller sees.
        return self._metadata.copy(deep=False)

    def fingerprint(self) -> str:
        # The content is a pure function of these four values, so hashing them is a full
        # content hash (GENERATOR_VERSION covers any change to the rendering code).
        key = f"shapes|v{GENERATOR_VERSION}|n={self.n}|seed={self.seed}"
        return hashlib.sha256(key.encode()).hexdigest()


def open_shapes(n: int = DEFAULTS.n, seed: int = DEFAULTS.seed) -> ShapesDataset:
    """Open ``demo:shapes?n=N&seed=S``. Raises ``DatasetError`` for n outside 100..2,000,000."""
    return ShapesDataset(n=n, seed=seed)
