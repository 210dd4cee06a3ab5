"""Hostile bundles for the issue-21 tests: bundles that claim to be what Home shows.

``home_bundle_impostor(root)`` copies the committed demo bundle (what Home opens on) keeping
every claim of its manifest (fingerprint, vectors and map keys) but with scrambled maps, so a
victim shown the impostor's maps would see noise. ``genuine_map(model, method)`` is the real one.

``demo_impostor(root)`` builds a 1,797-item bundle of random images (``baseline:pixels``) whose
manifest claims ``demo:digits``' fingerprint, the Home map's vectors key and its PCA map key,
with every map moved far away (x around 1000), so a victim who is shown the impostor's map
can tell at a glance. Checksums are recomputed: only the claims are lies.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

FAR = 1000.0  # where the impostor's maps lie (a real PCA map of digits is within a few units)


def rebundle(source: Path, out: Path, edit) -> Path:
    """``source`` with members and manifest changed by ``edit(members, manifest)``; member
    checksums recomputed so the bundle is valid apart from what it claims."""
    with zipfile.ZipFile(source) as zin:
        members = {i.filename: zin.read(i) for i in zin.infolist()}
    manifest = json.loads(members.pop("manifest.json"))
    edit(members, manifest)
    manifest["files"] = {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        zout.writestr("manifest.json", json.dumps(manifest))
        for k, v in members.items():
            zout.writestr(k, v)
    return out


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def lookalike_bundle(root: Path) -> Path:
    """A valid 1,797-item bundle of random images with a PCA map (what the impostor edits)."""
    from engine.outputs.bundle import write_bundle
    from engine.store.cache import Cache
    from tests.fakes import ArrayImageDataset

    out = root / "lookalike.parallax.zip"
    if not out.exists():
        ds = ArrayImageDataset(1797, seed=7, texts=False)
        write_bundle(ds, ["baseline:pixels"], out, methods=("pca",), cache=Cache(root / "c"))
    return out


def demo_impostor(root: Path, source: Path | None = None) -> Path:
    """The bundle that claims to be ``demo:digits`` x ``baseline:pixels`` (see module doc)."""
    from engine.data import open_dataset
    from engine.embed.local import vectors_key
    from engine.maps.project import projection_key
    from engine.models import load_model

    source = source or lookalike_bundle(root)
    demo = open_dataset("demo:digits")
    home_key = vectors_key(demo, load_model("baseline:pixels"), "image")

    def claim(members: dict, manifest: dict) -> None:
        manifest["dataset"]["fingerprint"] = demo.fingerprint()
        manifest["dataset"]["name"] = "digits"
        model = manifest["models"][0]
        model["vectors_key"] = home_key
        model["vectors_manifest"]["dataset_fingerprint"] = demo.fingerprint()
        for proj in manifest["projections"]:
            proj["key"] = projection_key(home_key, proj["method"], {"seed": 0})
            proj["params"] = {"seed": 0}
            rng = np.random.default_rng(0)
            members[proj["path"]] = _npy((FAR + rng.random((1797, 2))).astype(np.float32))

    return rebundle(source, root / "digits.parallax.zip", claim)


DEMO_BUNDLE = Path(__file__).resolve().parent.parent / "bundles" / "demo-shapes.parallax.zip"


def genuine_map(model: int = 0, method: str = "umap") -> np.ndarray:
    """The committed demo bundle's own map of its ``model``-th model."""
    with zipfile.ZipFile(DEMO_BUNDLE) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        (proj,) = [
            p for p in manifest["projections"] if p["model"] == model and p["method"] == method
        ]
        return np.load(io.BytesIO(zf.read(proj["path"])), allow_pickle=False)


def home_bundle_impostor(root: Path) -> Path:
    """The demo bundle with every map replaced by noise and every claim left as it was."""

    def scramble(members: dict, manifest: dict) -> None:
        rng = np.random.default_rng(1)
        for proj in manifest["projections"]:
            coords = np.load(io.BytesIO(members[proj["path"]]), allow_pickle=False)
            members[proj["path"]] = _npy(rng.random(coords.shape).astype(np.float32))

    root.mkdir(parents=True, exist_ok=True)
    return rebundle(DEMO_BUNDLE, root / "demo-shapes.parallax.zip", scramble)
