"""A second shapes renderer, for evaluation only: never imported by the training code.

The shipped CLIPs are trained on ``demo:shapes`` (Pillow polygons on muted, textured 64×64
backgrounds) plus ``training/scenes.py``'s augmented scenes. To see whether a model learnt
shapes rather than one generator, it is also measured on these drawings, made by different
code: signed-distance fields in NumPy, 96×96 (the model's preprocessing resizes them), one
plain filled shape on a light, flat background, placed near the centre, in colours taken from
matplotlib's "tab10" palette rather than either training palette. Three shapes × three colours,
balanced, so chance is 1/3 for each attribute.

``tests/test_training.py`` checks that no training module imports this one.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: tuple[str, ...] = ("red", "green", "blue")
IMAGE_SIZE = 96
PROMPT = "a {colour} {shape}"

# matplotlib tab10: a palette neither training renderer uses.
_RGB: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 119, 180),
}
# Light, flat backgrounds (paper, off-white, pale grey, pale blue-grey, cream).
_BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255),
    (246, 244, 238),
    (232, 232, 232),
    (226, 232, 240),
    (250, 240, 215),
)


def _sdf(shape: str, x: np.ndarray, y: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) to a shape of circumradius ``r`` at 0, 0."""
    if shape == "circle":
        return np.hypot(x, y) - r
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    if shape == "square":
        half = r / np.sqrt(2.0)
        return np.maximum(np.abs(u), np.abs(v)) - half
    if shape == "triangle":
        # Intersection of three half-planes, edges at distance r/2 from the centre, one vertex
        # pointing up (image y grows downwards).
        d = None
        for k in range(3):
            a = np.pi / 2 + k * 2 * np.pi / 3  # outward normals: down, upper-left, upper-right
            edge = u * np.cos(a) + v * np.sin(a) - r / 2
            d = edge if d is None else np.maximum(d, edge)
        return d
    raise ValueError(f"unknown shape {shape!r}")


def render(shape: str, colour: str, rng: np.random.Generator) -> Image.Image:
    """One drawing: a filled ``colour`` ``shape`` on a light background."""
    size = IMAGE_SIZE
    r = size * rng.uniform(0.22, 0.36)
    cx = size / 2 + rng.uniform(-0.12, 0.12) * size
    cy = size / 2 + rng.uniform(-0.12, 0.12) * size
    angle = np.deg2rad(rng.uniform(-15.0, 15.0))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dist = _sdf(shape, xx - cx, yy - cy, r, angle)
    alpha = np.clip(0.5 - dist, 0.0, 1.0)[:, :, None]  # one-pixel antialiased edge
    bg = np.array(_BACKGROUNDS[rng.integers(len(_BACKGROUNDS))], dtype=np.float64)
    fg = np.array(_RGB[colour], dtype=np.float64) + rng.uniform(-8, 8, 3)
    pixels = bg * (1 - alpha) + fg * alpha
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


def holdout_set(
    n_per_class: int = 40, seed: int = 0
) -> tuple[list[Image.Image], list[str], list[str]]:
    """``n_per_class`` drawings of each shape × colour: (images, shapes, colours)."""
    rng = np.random.default_rng([seed, 19])
    images, shapes, colours = [], [], []
    for shape in SHAPES:
        for colour in COLOURS:
            for _ in range(n_per_class):
                images.append(render(shape, colour, rng))
                shapes.append(shape)
                colours.append(colour)
    return images, shapes, colours
