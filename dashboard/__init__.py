"""Streamlit front for Parallax: shared UI helpers and session state (no model code here)."""
