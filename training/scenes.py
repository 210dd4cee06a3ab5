"""Augmented training scenes: the ``demo:shapes`` vocabulary drawn in many more ways.

A model trained only on ``demo:shapes`` learns that generator (muted textured backgrounds, one
filled shape, fixed colours) and falls to chance on shapes drawn elsewhere. These scenes vary
what should not matter and keep what the caption names:

* drawing style: filled, outlined, filled with a contrasting border; antialiased or aliased;
  any rotation (hearts stay roughly upright); drawn at 48-128 px and resized to 64 with a
  random filter, as a model's preprocessing would;
* colour: each colour name covers a band of hue, saturation and value, not one RGB triple;
* background: flat colours from the whole range (white and near-black included), two-colour
  gradients, stripes / checks / noise, and crops of photographs that ship with scikit-learn and
  scikit-image (random place, scale, flip and tint);
* clutter: up to two smaller distractor shapes of another shape and colour; the caption names
  the largest (the target);
* degradation: Gaussian blur, pixel noise, JPEG artefacts.

Sizes use the demo's words by the target's circumradius relative to the image (small < 0.17,
medium 0.19-0.26, large > 0.29 of the side). Every scene depends only on ``(seed, index)``.
"""

from __future__ import annotations

import colorsys
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from engine.data.shapes import COLOURS, SHAPES, SIZES, heart_outline, polygon, rotate

OUT_SIZE = 64
# Bump whenever a change alters any scene: it names cached scene pools.
GENERATOR_VERSION = 1

# (hue range in degrees, saturation range, value range) per colour name; hue ranges may wrap.
_COLOUR_HSV: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "red": ((-12.0, 8.0), (0.65, 1.0), (0.55, 1.0)),
    "orange": ((18.0, 36.0), (0.7, 1.0), (0.8, 1.0)),
    "yellow": ((46.0, 62.0), (0.65, 1.0), (0.8, 1.0)),
    "green": ((90.0, 150.0), (0.55, 1.0), (0.45, 0.95)),
    "blue": ((200.0, 240.0), (0.6, 1.0), (0.5, 1.0)),
    "purple": ((265.0, 295.0), (0.5, 0.95), (0.4, 0.9)),
    "white": ((0.0, 360.0), (0.0, 0.08), (0.92, 1.0)),
    "black": ((0.0, 360.0), (0.0, 0.3), (0.0, 0.16)),
}
assert set(_COLOUR_HSV) == set(COLOURS)

# Target circumradius as a share of the image side, per size word (gaps keep words apart).
_SIZE_SHARE: tuple[tuple[float, float], ...] = ((0.11, 0.16), (0.19, 0.26), (0.29, 0.40))
assert len(_SIZE_SHARE) == len(SIZES)

# Photographs shipped inside installed packages (file names, looked up in each package).
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
_SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
_MIN_CONTRAST = 90.0  # RGB distance between the target's colour and the background around it


@dataclass(frozen=True)
class Scene:
    """What the caption of a scene may name."""

    shape: int
    colour: int
    size: int


@lru_cache(maxsize=1)
def photos() -> tuple[np.ndarray, ...]:
    """The background photographs as uint8 RGB arrays (needs scikit-learn and scikit-image)."""
    try:
        import skimage.data
        import sklearn.datasets
    except ImportError as exc:
        raise SystemExit(
            f"training scenes need scikit-learn and scikit-image ({exc.name} is missing): "
            "pip install -r requirements-training.txt"
        ) from None
    folders = [
        (Path(sklearn.datasets.__file__).parent / "images", _SKLEARN_PHOTOS),
        (Path(skimage.data.__file__).parent, _SKIMAGE_PHOTOS),
    ]
    out = []
    for folder, names in folders:
        for name in names:
            with Image.open(folder / name) as im:
                out.append(np.asarray(im.convert("RGB")))
    return tuple(out)


def photo_names() -> list[str]:
    return [*_SKLEARN_PHOTOS, *_SKIMAGE_PHOTOS]


def sample_colour(name: str, rng: np.random.Generator) -> np.ndarray:
    (h0, h1), (s0, s1), (v0, v1) = _COLOUR_HSV[name]
    h = (rng.uniform(h0, h1) % 360.0) / 360.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(s0, s1), rng.uniform(v0, v1))
    return np.array([r, g, b]) * 255.0


def _random_rgb(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A float (size, size, 3) background."""
    kind = rng.choice(["flat", "flat_light", "gradient", "texture", "photo", "photo"])
    if kind == "flat":
        return np.broadcast_to(_random_rgb(rng), (size, size, 3)).copy()
    if kind == "flat_light":
        base = rng.uniform(200, 255) - rng.uniform(0, 25, 3)
        return np.broadcast_to(base, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    a = rng.uniform(0, 2 * np.pi)
    u = xx * np.cos(a) + yy * np.sin(a)
    if kind == "gradient":
        t = ((u - u.min()) / max(float(u.max() - u.min()), 1e-6))[:, :, None]
        return _random_rgb(rng) * (1 - t) + _random_rgb(rng) * t
    if kind == "texture":
        c1, c2 = _random_rgb(rng), _random_rgb(rng)
        pattern = rng.choice(["stripes", "checker", "noise", "dots"])
        if pattern == "stripes":
            t = (np.sin(2 * np.pi * u * size / rng.uniform(4, 14)) > 0).astype(np.float64)
        elif pattern == "checker":
            cell = rng.uniform(3, 12) / size
            t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float64)
        elif pattern == "noise":
            coarse = rng.random((int(rng.integers(4, 17)),) * 2)
            noise = Image.fromarray((coarse * 255).astype(np.uint8))
            t = np.asarray(noise.resize((size, size), Image.BICUBIC), dtype=np.float64) / 255.0
        else:
            period = rng.uniform(5, 12) / size
            t = (
                np.hypot((xx % period) - period / 2, (yy % period) - period / 2) < period / 4
            ).astype(np.float64)
        return c1 * (1 - t[:, :, None]) + c2 * t[:, :, None]
    photo = photos()[rng.integers(len(photos()))]
    h, w = photo.shape[:2]
    side = int(rng.uniform(0.08, 0.9) * min(h, w))
    side = max(side, 16)
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y0 : y0 + side, x0 : x0 + side]).resize(
        (size, size), Image.BILINEAR
    )
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(crop, dtype=np.float64)
    if rng.random() < 0.4:  # tint / darken / wash out
        arr = arr * rng.uniform(0.5, 1.1) + rng.uniform(-40, 60, 3)
    return np.clip(arr, 0, 255)


def _draw_filled(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, rot: float
) -> None:
    """Draw ``shape`` filled (255) into ``draw``: Pillow polygons, points computed here."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape in ("square", "triangle", "hexagon"):
        k = {"square": 4, "triangle": 3, "hexagon": 6}[shape]
        draw.polygon(polygon(cx, cy, np.full(k, r), rot), fill=255)
    elif shape == "star":
        draw.polygon(polygon(cx, cy, np.tile([r, 0.42 * r], 5), rot), fill=255)
    elif shape == "cross":
        w = 0.36 * r
        pts = np.array(
            [
                [-w, -r],
                [w, -r],
                [w, -w],
                [r, -w],
                [r, w],
                [w, w],
                [w, r],
                [-w, r],
                [-w, w],
                [-r, w],
                [-r, -w],
                [-w, -w],
            ]
        )
        draw.polygon(rotate(pts, cx, cy, rot), fill=255)
    elif shape == "heart":
        draw.polygon(rotate(heart_outline(r, points=40), cx, cy, (rot % 60.0) - 30.0), fill=255)
    elif shape == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        a = np.deg2rad(rot)
        ox, oy, r2 = cx + 0.45 * r * np.cos(a), cy + 0.45 * r * np.sin(a), 0.85 * r
        draw.ellipse((ox - r2, oy - r2, ox + r2, oy + r2), fill=0)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _draw_mask(
    shape: str, cx: float, cy: float, r: float, rot: float, size: int, ss: int, outline: int | None
) -> np.ndarray:
    """Coverage in [0, 1] at ``size``, drawn ``ss`` times larger and reduced (antialiasing);
    ``outline``: keep only a band that many pixels wide inside the edge."""
    big = Image.new("L", (size * ss, size * ss), 0)
    _draw_filled(ImageDraw.Draw(big), shape, cx * ss, cy * ss, r * ss, rot)
    mask = big.reduce(ss) if ss > 1 else big
    cover = np.asarray(mask, dtype=np.float64) / 255.0
    if outline is not None:
        return np.clip(cover - _erode(cover, outline), 0.0, 1.0)
    return cover


def _erode(cover: np.ndarray, pixels: int) -> np.ndarray:
    """Grey erosion by a (2 * pixels + 1)² square: repeated 3-wide minima along each axis."""
    out = cover
    for _ in range(pixels):
        p = np.pad(out, 1, constant_values=0.0)
        out = np.minimum(np.minimum(p[:-2, 1:-1], p[1:-1, 1:-1]), p[2:, 1:-1])
        p = np.pad(out, 1, constant_values=0.0)
        out = np.minimum(np.minimum(p[1:-1, :-2], p[1:-1, 1:-1]), p[1:-1, 2:])
    return out


def _place(
    r: float, size: int, taken: list[tuple[float, float, float]], rng: np.random.Generator
) -> tuple[float, float]:
    """A centre keeping the shape inside the image and, if possible, off the others."""
    best, best_gap = (size / 2, size / 2), -np.inf
    for _ in range(12):
        cx = rng.uniform(r + 1, size - r - 1)
        cy = rng.uniform(r + 1, size - r - 1)
        gap = min((math.hypot(cx - x, cy - y) - (r + q) for x, y, q in taken), default=np.inf)
        if gap > 0:
            return cx, cy
        if gap > best_gap:
            best, best_gap = (cx, cy), gap
    return best


def render_scene(seed: int, index: int) -> tuple[np.ndarray, Scene]:
    """One augmented scene: a uint8 (64, 64, 3) image and the attributes its caption names."""
    rng = np.random.default_rng([seed, index, 23])
    size = int(rng.choice([48, 64, 64, 80, 96, 128]))
    ss = int(rng.choice([1, 2, 4, 4]))
    bg = _background(size, rng)
    target = Scene(
        int(rng.integers(len(SHAPES))), int(rng.integers(len(COLOURS))), int(rng.integers(3))
    )
    lo, hi = _SIZE_SHARE[target.size]
    r = rng.uniform(lo, hi) * size
    cx, cy = _place(r, size, [], rng)
    # Keep the target's colour far from the background under it (re-draw the colour if not).
    region = bg[int(max(0, cy - r)) : int(cy + r) + 1, int(max(0, cx - r)) : int(cx + r) + 1]
    local = region.reshape(-1, 3).mean(axis=0)
    colour = sample_colour(COLOURS[target.colour], rng)
    for _ in range(20):
        if np.linalg.norm(colour - local) >= _MIN_CONTRAST:
            break
        colour = sample_colour(COLOURS[target.colour], rng)
    else:  # the background itself gives way: wash it towards a contrasting tone
        far = np.where(colour > 128, 30.0, 225.0)
        bg = 0.35 * bg + 0.65 * far

    shapes = [(target.shape, colour, r, cx, cy)]
    taken = [(cx, cy, r)]
    for _ in range(int(rng.choice([0, 0, 0, 1, 1, 2]))):  # smaller distractors
        others = [s for s in range(len(SHAPES)) if s != target.shape]
        s = int(rng.choice(others))
        c = int(rng.choice([c for c in range(len(COLOURS)) if c != target.colour]))
        rr = r * rng.uniform(0.35, 0.6)
        x, y = _place(rr, size, taken, rng)
        taken.append((x, y, rr))
        shapes.append((s, sample_colour(COLOURS[c], rng), rr, x, y))

    pixels = bg
    for s, col, rr, x, y in reversed(shapes):  # the target last, on top
        rot = rng.uniform(0, 360)
        style = rng.choice(["fill", "fill", "fill", "outline", "border"])
        width = max(1, round(rr * rng.uniform(0.12, 0.3))) if style == "outline" else None
        mask = _draw_mask(SHAPES[s], x, y, rr, rot, size, ss, width)[:, :, None]
        pixels = pixels * (1 - mask) + col * mask
        if style == "border":
            edge = _draw_mask(SHAPES[s], x, y, rr, rot, size, ss, max(1, round(rr * 0.1)))
            line = 20.0 if col.mean() > 110 else 235.0
            pixels = pixels * (1 - edge[:, :, None]) + line * edge[:, :, None]

    img = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")
    if size != OUT_SIZE:
        img = img.resize(
            (OUT_SIZE, OUT_SIZE),
            [Image.BICUBIC, Image.BILINEAR, Image.LANCZOS, Image.BOX][int(rng.integers(4))],
        )
    if rng.random() < 0.25:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.1)))
    arr = np.asarray(img, dtype=np.float64)
    if rng.random() < 0.3:
        arr = arr + rng.normal(0, rng.uniform(2, 14), arr.shape)
    img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.3:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(15, 75)))
        buf.seek(0)
        with Image.open(buf) as jpeg:
            img = jpeg.convert("RGB")
    return np.asarray(img), target
