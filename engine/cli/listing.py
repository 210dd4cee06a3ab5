"""``datasets`` and ``models``: what can be opened and embedded here."""

from __future__ import annotations

import argparse
from argparse import ArgumentParser
from typing import Any

from engine.cli.common import emit, open_cache


def cmd_datasets(args: argparse.Namespace) -> int:
    from engine.data import list_demos, open_dataset

    if args.inspect:
        ds = open_dataset(args.inspect, cache_root=open_cache(args).root)
        labels: dict[str, int] = {}
        for label in ds.labels:
            key = "(none)" if label is None else str(label)
            labels[key] = labels.get(key, 0) + 1
        payload = {
            "spec": ds.spec,
            "name": ds.name,
            "n": len(ds),
            "has_images": ds.has_images,
            "has_texts": ds.texts is not None,
            "labels": labels,
            "metadata_columns": list(ds.metadata().columns),
            "fingerprint": ds.fingerprint(),
            "skipped": [{"source": s.source, "reason": s.reason} for s in ds.skipped],
        }

        def human() -> None:
            kinds = "images" if ds.has_images else ""
            if ds.texts is not None:
                kinds = (kinds + " + texts").strip(" +")
            print(f"{ds.spec}: {len(ds)} items ({kinds}), {len(labels)} labels")
            for s in ds.skipped:
                print(f"  skipped {s.source}: {s.reason}")

        emit(args, payload, human)
        return 0
    demos = list_demos()
    emit(
        args,
        {"demos": demos},
        lambda: [print(f"{d['spec']:<24} {d.get('description', '')}") for d in demos],
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from engine.models import known_models

    models = known_models()

    def human() -> None:
        for m in models:
            mark = "offline" if m.get("available_offline") else "needs download"
            mods = "+".join(sorted(m.get("modalities", [])))
            print(f"{m['spec']:<48} {mods:<11} {mark}")

    emit(args, {"models": models}, human)
    return 0


def register(sub: Any, common: ArgumentParser, embed_opts: ArgumentParser) -> None:
    p = sub.add_parser("datasets", parents=[common], help="list built-in datasets or inspect one")
    p.add_argument("--inspect", metavar="SPEC", help="open a dataset and summarise it")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("models", parents=[common], help="list known model specs")
    p.set_defaults(func=cmd_models)
