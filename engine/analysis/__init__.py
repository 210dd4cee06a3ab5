"""What the vectors say: comparisons and metrics, zero-shot prediction, search, fusion heads, an
item's neighbours."""
