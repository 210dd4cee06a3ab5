"""Parallax engine: datasets -> models -> cached vectors -> 2-D maps and comparisons.

Pure Python, no Streamlit. Heavy libraries (torch, open_clip, transformers, umap) are imported
inside the functions that need them, so browsing cached results never pays for them.
"""

__version__ = "0.1.0"
