"""``datasets`` and ``models``: what can be opened and embedded here."""

from __future__ import annotations

import argparse
from argparse import ArgumentParser
from typing import Any

from engine.cli.common import emit, workspace


def cmd_datasets(args: argparse.Namespace) -> int:
    ws = workspace(args)
    if args.inspect:
        payload = ws.inspect(args.inspect)

        def human() -> None:
            kinds = "images" if payload["has_images"] else ""
            if payload["has_texts"]:
                kinds = (kinds + " + texts").strip(" +")
            print(
                f"{payload['spec']}: {payload['n']} items ({kinds}), "
                f"{len(payload['labels'])} labels"
            )
            for s in payload["skipped"]:
                print(f"  skipped {s['source']}: {s['reason']}")

        emit(args, payload, human)
        return 0
    demos = ws.demos()
    emit(
        args,
        {"demos": demos},
        lambda: [print(f"{d['spec']:<24} {d.get('description', '')}") for d in demos],
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    models = workspace(args).models()

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
