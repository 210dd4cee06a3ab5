"""Tiny models built locally for tests: no hub, no downloads, a few MB each.

Import the fixtures into a test module (``from tests.model_fixtures import *`` or by name).
They are session-scoped and written under pytest's temporary directory.

* ``tiny_open_clip_dir`` - an open_clip ``local-dir`` folder (open_clip_config.json with
  ``model_cfg`` + ``preprocess_cfg``, open_clip_model.safetensors). The default BPE tokenizer
  ships with open_clip, so its vocabulary stays at 49,408 tokens (text width 32: ~6 MB).
* ``tiny_open_clip_arch`` - (architecture name, checkpoint path): the same kind of model
  registered as a built-in open_clip architecture (``open_clip.add_model_config``) so the
  ``open_clip:ARCH/weights.safetensors`` form can be tested without a 350 MB ViT-B-32.
* ``tiny_hf_clip_dir`` / ``tiny_hf_siglip_dir`` - transformers ``CLIPModel`` / ``SiglipModel``
  from small configs, saved with ``save_pretrained`` plus an image processor and a tokenizer.
  The tokenizer is a ``CLIPTokenizer`` built from a hand-written byte-level vocabulary (every
  byte, alone and word-final, plus a few merges: ~520 tokens), which needs no network. SigLIP's
  own tokenizer is SentencePiece-based and cannot be built offline without a trained
  ``spiece.model``, so the SigLIP fixture reuses this CLIP-style tokenizer; the adapter loads
  tokenizer and image processor separately (no ``AutoProcessor``), which makes that work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

EMBED_DIM = 16
IMAGE_SIZE = 32

OPEN_CLIP_CFG: dict[str, Any] = {
    "embed_dim": EMBED_DIM,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PREPROCESS_CFG: dict[str, Any] = {
    "size": IMAGE_SIZE,
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}
TINY_ARCH = "parallax-tiny-test"


def _save_state_dict(model: Any, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, path)


def build_open_clip_dir(folder: Path, seed: int = 0, preprocess: dict | None = None) -> Path:
    """Write a tiny open_clip local-dir model into ``folder`` (created) and return it."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": OPEN_CLIP_CFG, "preprocess_cfg": preprocess or PREPROCESS_CFG}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(
            f"local-dir:{folder}", load_weights=False, pretrained_text=False
        )
    _save_state_dict(model, folder / "open_clip_model.safetensors")
    return folder


def register_tiny_arch(folder: Path) -> str:
    """Register ``TINY_ARCH`` as an open_clip built-in architecture (process-wide)."""
    import open_clip

    path = folder / f"{TINY_ARCH}.json"
    path.write_text(json.dumps(OPEN_CLIP_CFG))
    open_clip.add_model_config(path)
    return TINY_ARCH


# -- a byte-level BPE vocabulary small enough to write by hand -----------------------------------
def _bytes_to_unicode() -> list[str]:
    """GPT-2 / CLIP's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs, strict=True))]


MERGES = ["t h", "th e</w>", "a n", "an d</w>", "o f</w>", "i s</w>"]


def build_clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars]
    for merge in MERGES:
        tokens.append(merge.replace(" ", ""))
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in MERGES])


def _tokenizer_ids(tok: Any) -> dict[str, int]:
    vocab = tok.get_vocab()
    return {
        "vocab_size": len(vocab),
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }


def build_hf_clip_dir(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok = build_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            **_tokenizer_ids(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=EMBED_DIM,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(folder)
    return folder


def build_hf_siglip_dir(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    tok = build_clip_tokenizer()
    config = SiglipConfig(
        text_config={
            **_tokenizer_ids(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
        },
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipModel(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder


# -- pytest fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_open_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_open_clip_dir(tmp_path_factory.mktemp("models") / "tiny-open-clip")


@pytest.fixture(scope="session")
def tiny_open_clip_arch(
    tmp_path_factory: pytest.TempPathFactory, tiny_open_clip_dir: Path
) -> tuple[str, Path]:
    arch = register_tiny_arch(tmp_path_factory.mktemp("arch"))
    return arch, tiny_open_clip_dir / "open_clip_model.safetensors"


@pytest.fixture(scope="session")
def tiny_hf_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hf_clip_dir(tmp_path_factory.mktemp("models") / "tiny-hf-clip")


@pytest.fixture(scope="session")
def tiny_hf_siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hf_siglip_dir(tmp_path_factory.mktemp("models") / "tiny-hf-siglip")
