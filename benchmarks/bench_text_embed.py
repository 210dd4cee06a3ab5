"""Benchmark 2: MiniLM text embedding through the engine vs plain SentenceTransformer.encode.

Same sentences, same batch size, model loaded once before timing (loading is not what is
compared). The engine side includes its cache writes, progress and normalisation.

    python benchmarks/bench_text_embed.py [--quick] [--json]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import Reporter, interleaved, parser, throughput_ratio

from engine.data import open_dataset
from engine.embed.local import embed_dataset
from engine.models import load_model
from engine.store.cache import Cache


def main() -> None:
    args = parser(__doc__).parse_args()
    rep = Reporter("minilm_text_embed", args)
    dataset = open_dataset("demo:sentences")
    n = 64 if args.quick else len(dataset)
    if args.quick:
        dataset.ids, dataset.labels, dataset.texts = (
            dataset.ids[:n],
            dataset.labels[:n],
            dataset.texts[:n],
        )
    model = load_model("st:all-MiniLM-L6-v2", device="cpu")
    st_model = model._model  # the SentenceTransformer behind the adapter
    texts = list(dataset.texts)
    batch = model.default_batch_size

    def plain() -> None:
        st_model.encode(texts, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)

    plain()  # warm-up
    with tempfile.TemporaryDirectory() as tmp:

        def engine(run: int) -> None:
            embed_dataset(dataset, model, cache=Cache(Path(tmp) / f"c{run}"))

        plain_s, engine_s = interleaved(plain, engine, 1 if args.quick else 3)
    rep.log(f"plain encode: {n / min(plain_s):.1f} texts/s; engine: {n / min(engine_s):.1f}")
    rep.done(
        {
            "model": "st:all-MiniLM-L6-v2",
            "n": n,
            "batch_size": batch,
            **throughput_ratio(n, plain_s, engine_s, ("plain", "texts"), 1),
        }
    )


if __name__ == "__main__":
    main()
