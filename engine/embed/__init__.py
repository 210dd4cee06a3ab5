"""Embedding a dataset with a model: the local backend (threads, GPU decoding), the Ray Data
backend."""
