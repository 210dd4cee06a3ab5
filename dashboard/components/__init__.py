"""Streamlit custom components whose frontend source lives in this repository."""
