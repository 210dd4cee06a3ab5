"""Vectors to 2-D maps: k-NN graphs (faiss), PCA and UMAP, alignment, the browser payload."""
