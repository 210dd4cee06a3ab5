"""Training and evaluation of the small CLIP models shipped in ``models/``.

Kept apart from ``engine/``: nothing at run time imports it. It reuses the engine's device
choice (``engine.models.device``), prompt embedding (``engine.analysis.zeroshot``), model loading
(``engine.models``) and atomic writes (``engine.store.cache``).

    nice -n 10 python -m training.train_clip --out models/shapes-clip --config shapes-clip --json
    python -m training.eval_clip --model models/shapes-clip --json
"""
