"""UMAP on the GPU with cuML, when it is installed and a GPU is present (``requirements-gpu.txt``).

``engine.maps.project.umap_2d`` hands its fit here when ``enabled()``; everything around the fit
stays
as on the CPU, so above ``fit_sample`` points the GPU fits the same seeded sample and the rest are
placed by their nearest sample points. cuML computes its own neighbour graph on the GPU (the
CPU path's exact faiss graph would cost more than the fit). A cuML map is close to, not equal
to, the CPU map's for the same seed; each is reproducible on its own.

``PARALLAX_GPU_UMAP``: ``auto`` (default: cuML if importable and a CUDA GPU is there), ``off``
(always the CPU layout), ``on`` (cuML or a one-line error).
"""

from __future__ import annotations

import importlib.util

import numpy as np

from engine import settings
from engine.errors import ParallaxError

ENV = "PARALLAX_GPU_UMAP"


def _mode() -> str:
    return settings.gpu_umap()


def gpu_present() -> bool:
    """A CUDA GPU that cuML can use (asked through CuPy, which cuML brings)."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


def cuml_installed() -> bool:
    return importlib.util.find_spec("cuml") is not None


def enabled() -> bool:
    """Whether UMAP fits run on the GPU now (see the module docstring for the switch)."""
    mode = _mode()
    if mode == "off":
        return False
    ready = cuml_installed() and gpu_present()
    if mode == "on" and not ready:
        raise ParallaxError(
            f"{ENV}=on but cuML or a GPU is missing: pip install -r requirements-gpu.txt on a "
            f"machine with an NVIDIA GPU, or unset {ENV}"
        )
    return ready


def umap_2d(
    x: np.ndarray, seed: int, n_neighbors: int, min_dist: float, n_epochs: int
) -> np.ndarray:
    """cuML UMAP of the rows of ``x`` (already L2-normalised), seeded, cosine metric."""
    from cuml.manifold import UMAP

    reducer = UMAP(
        n_components=2,
        n_neighbors=int(n_neighbors),
        min_dist=float(min_dist),
        metric="cosine",
        n_epochs=int(n_epochs),
        init="spectral",
        random_state=int(seed),
        output_type="numpy",
    )
    out = reducer.fit_transform(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(out, dtype=np.float32)
