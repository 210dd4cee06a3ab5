"""AppTest helpers for the WebGL map element (``dashboard.components.scatter``)."""

from __future__ import annotations

import json
from typing import Any


def scatter_maps(at: Any) -> list[dict[str, Any]]:
    """The JSON each map element sent: id, title, n, colours (palette, legend), selection."""
    return [
        json.loads(el.proto.json)
        for el in at.get("bidi_component")
        if el.proto.component_name == "parallax_scatter"
    ]


def selected(m: dict[str, Any]) -> list[int]:
    """The rows a map element was told to select (inline selections only)."""
    sel = m.get("selection") or {}
    return list(sel.get("rows") or [])
