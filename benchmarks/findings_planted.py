"""Planted datasets for ``bench_findings.py``: known label errors, copies, leaks and outliers.

``planted_shapes`` writes a manifest (CSV + PNG files) of ``demo:shapes`` drawings with a
``split`` column and these problems planted, all from one seed:

* flipped labels (the drawing stays, its label becomes another shape);
* exact copies (the same PNG bytes under a new name, same split);
* near copies (shifted by a few pixels, cropped and resized, or recoloured a little; same split);
* copies across splits (exact or near, the copy in the other split): leaks;
* out-of-domain items in small groups (handwritten digits, noise, photographs of a gradient)
  with a shape label.

Sources of each kind are disjoint, so every planted row has one truth. Rows are shuffled.
``planted_sentences`` does the same for texts (``demo:sentences``): flipped topics, exact and
near copies (a word changed), leaks and off-topic sentences.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance


@dataclass
class Truth:
    n: int
    flipped: set[int] = field(default_factory=set)
    exact_pairs: set[tuple[int, int]] = field(default_factory=set)
    near_pairs: set[tuple[int, int]] = field(default_factory=set)  # near copies (not exact)
    leak_pairs: set[tuple[int, int]] = field(default_factory=set)  # across splits (any copy)
    outliers: set[int] = field(default_factory=set)
    labels: list[str] = field(default_factory=list)  # the true label of every row

    @property
    def all_pairs(self) -> set[tuple[int, int]]:
        return self.exact_pairs | self.near_pairs | self.leak_pairs


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def _perturb(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A near copy: a small shift, a small crop resized back, or a small recolour."""
    kind = int(rng.integers(0, 3))
    w, h = im.size
    if kind == 0:
        dx, dy = (int(v) for v in rng.choice([-2, -1, 1, 2], size=2))
        arr = np.asarray(im)
        arr = np.roll(np.roll(arr, dy, axis=0), dx, axis=1)
        return Image.fromarray(arr)
    if kind == 1:
        c = int(rng.integers(2, 5))
        return im.crop((c, c, w - c, h - c)).resize((w, h), Image.BILINEAR)
    factor = float(rng.uniform(0.85, 0.93) if rng.random() < 0.5 else rng.uniform(1.07, 1.15))
    return ImageEnhance.Brightness(im).enhance(factor)


def _outlier_images(count: int, rng: np.random.Generator, size: int = 64) -> list[Image.Image]:
    """Out-of-domain drawings in small groups: digits, noise, smooth gradients."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    out: list[Image.Image] = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            d = digits.images[int(rng.integers(0, len(digits.images)))] / 16.0
            g = (255 * (1 - d)).astype(np.uint8)
            im = Image.fromarray(g).resize((size, size), Image.NEAREST).convert("RGB")
        elif kind == 1:
            im = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        else:
            a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            t = np.linspace(0, 1, size)[None, :, None]
            arr = (a * (1 - t) + b * t).repeat(size, axis=0).astype(np.uint8)
            im = Image.fromarray(arr)
        out.append(im)
    return out


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def planted_shapes(
    out: Path,
    *,
    seed: int = 0,
    n_base: int = 1360,
    flips: int = 70,
    exact: int = 20,
    near: int = 40,
    cross: int = 30,
    outliers: int = 30,
) -> tuple[Path, Truth]:
    """Write the planted shapes set under ``out``; the manifest path and the truth."""
    from engine.data import open_dataset

    rng = np.random.default_rng(1000 + seed)
    base = open_dataset(f"demo:shapes?n={max(100, n_base)}&seed={seed}")
    classes = sorted(set(base.labels))
    split = np.where(rng.random(n_base) < 0.8, "train", "test")
    picks = rng.permutation(n_base)
    cut = np.cumsum([flips, exact, near, cross])
    flip_src, exact_src, near_src, cross_src = np.split(picks[: cut[-1]], cut[:-1])

    # rows: (png bytes, label, true label, split, tag, source index)
    rows: list[tuple[bytes, str, str, str, str, int]] = []
    images = [base.load_image(i) for i in range(n_base)]
    pngs = [_png(im) for im in images]
    flip_set = set(int(i) for i in flip_src)
    for i in range(n_base):
        true = str(base.labels[i])
        label = true
        if i in flip_set:
            label = str(rng.choice([c for c in classes if c != true]))
        rows.append((pngs[i], label, true, str(split[i]), "flip" if i in flip_set else "", i))
    for i in exact_src:
        rows.append((pngs[i], str(base.labels[i]), str(base.labels[i]), str(split[i]), "exact", i))
    for i in near_src:
        b = _png(_perturb(images[i], rng))
        rows.append((b, str(base.labels[i]), str(base.labels[i]), str(split[i]), "near", i))
    for j, i in enumerate(cross_src):
        other = "test" if split[i] == "train" else "train"
        b = pngs[i] if j % 2 == 0 else _png(_perturb(images[i], rng))
        tag = "cross-exact" if j % 2 == 0 else "cross-near"
        rows.append((b, str(base.labels[i]), str(base.labels[i]), other, tag, i))
    for im in _outlier_images(outliers, rng):
        lab = str(rng.choice(classes))
        rows.append((_png(im), lab, "", str(rng.choice(["train", "test"])), "outlier", -1))

    order = rng.permutation(len(rows))
    position = {int(old): new for new, old in enumerate(order)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    truth = Truth(n=len(rows))
    truth.labels = [""] * len(rows)
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "label", "split"])
        for new, old in enumerate(order):
            data, label, true, sp, _tag, _src = rows[int(old)]
            name = f"images/{new:05d}.png"
            (out / name).write_bytes(data)
            w.writerow([f"item-{new:05d}", name, label, sp])
            truth.labels[new] = true
    for old, (_d, _l, _t, _s, tag, src) in enumerate(rows):
        new = position[old]
        if tag == "flip":
            truth.flipped.add(new)
        elif tag == "outlier":
            truth.outliers.add(new)
        elif tag:
            pair = _pair(position[src], new)
            if tag == "exact" or tag == "cross-exact":
                truth.exact_pairs.add(pair)
            else:
                truth.near_pairs.add(pair)
            if tag.startswith("cross"):
                truth.leak_pairs.add(pair)
    return out / "manifest.csv", truth
