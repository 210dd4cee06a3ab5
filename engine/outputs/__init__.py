"""What leaves the engine: Parquet exports and view-only bundles."""
