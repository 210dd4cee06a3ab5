"""Train a small CLIP on ``demo:shapes`` and save it as an open_clip ``local-dir:`` folder.

    nice -n 10 python -m training.train_clip --out models/shapes-clip --config shapes-clip --json

Why these choices:

* The text tower uses a tiny word-level tokenizer (under a hundred words) saved next to the
  weights as a Hugging Face ``tokenizer.json``. With open_clip's default 49,408-token BPE
  vocabulary the token embedding alone would be 25 MB at width 128; here it is a few kB.
  ``text_cfg.hf_tokenizer_name`` makes ``open_clip.get_tokenizer('local-dir:PATH')`` load the
  tokenizer from that same folder (open_clip always uses the folder for ``local-dir:``), and
  ``pool_type='eos'`` with ``eos_id`` pools the text at our end-of-text token.
* The ``shapes-clip`` presets use open_clip's ModifiedResNet: on this data it learnt shape much
  faster per sample than a default-initialised ViT of similar cost (43 % zero-shot shape
  accuracy after 51k samples against 22 % for a width-128, 4-layer, patch-8 ViT after 77k).
  The ViT preset closes that gap with a mimetic start and a ResNet teacher.
* Training images are rendered once into memory (a few seconds for 50k items) so the CPU
  spends its time on the model, not on Pillow.
* One torch thread by default: on the shared 2-core development box, two threads ran 10-20x
  slower than one whenever other jobs were busy (OpenMP threads waiting on each other).
  ``--threads 2`` may pay off on an idle machine; reproducibility holds per thread count.
* Everything random is seeded (model init, data order, caption choice) and torch runs with
  deterministic algorithms and a fixed thread count, so the same command gives the same
  weights bit for bit on the same machine, thread count and library versions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from engine.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    SIZES,
    TEMPLATES,
    fill_template,
    open_shapes,
)
from engine.models.device import resolve_device
from engine.settings import REPO_ROOT
from engine.store.cache import atomic_write_bytes

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
MAX_MODEL_BYTES = 10 * 1024**2

PAD, UNK, EOS = "[PAD]", "[UNK]", "[EOS]"
PAD_ID, UNK_ID, EOS_ID = 0, 1, 2
TOKENIZER_NAME = "parallax-shapes-wordlevel"  # informative only: local-dir loads from the folder

# More wordings of a full caption, so the text tower does not learn the dataset's ten by heart.
EXTRA_TEMPLATES: tuple[str, ...] = (
    "a drawing of {a_colour} {colour} {shape}",
    "{a_colour} {colour} {shape} icon",
    "the {shape} is {colour}",
    "{a_shape} {shape} shape in {colour}",
    "{colour} coloured {shape}",
    "a photo of {a_size} {size} {colour} {shape}",
    "{a_size} {size} {colour} {shape} in the picture",
)
MAIN_TEMPLATES: tuple[str, ...] = TEMPLATES + EXTRA_TEMPLATES

# Short, partial prompts mixed into training (``--partial-p``) so that zero-shot prompts such as
# "a circle" or "a red shape", which name only one attribute, land near the right images.
PARTIAL_TEMPLATES: tuple[str, ...] = (
    "{a_shape} {shape}",
    "{shape}",
    "a picture of {a_shape} {shape}",
    "a photo of {a_shape} {shape}",
    "{a_colour} {colour} shape",
    "{colour}",
    "something {colour}",
    "{a_colour} {colour} {shape}",
    "{a_size} {size} {shape}",
    "{a_size} {size} shape",
)

# Words users are likely to type in prompts, kept in the vocabulary so they are not [UNK].
# Words never seen in training keep their random initial embedding, which is small.
_EXTRA_TEXT = """
the this that is it of in on with and or photo image picture drawing icon object thing
shape shapes colour color coloured colored background big tiny little huge
"""
_EXTRA_WORDS = frozenset(_EXTRA_TEXT.split())
_PUNCTUATION = list(",.:;!?-'\"()")

# Preprocessing: images are already 64x64, so the open_clip transform (resize 64, centre crop
# 64) is the identity and only the normalisation below matters.
PREPROCESS_CFG: dict[str, Any] = {
    "size": 64,
    "mode": "RGB",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}


def _text_cfg(width: int, layers: int, context_length: int = 20) -> dict[str, Any]:
    return {
        "context_length": context_length,
        "vocab_size": 0,  # filled in from the tokenizer
        "hf_tokenizer_name": TOKENIZER_NAME,
        "width": width,
        "heads": max(1, width // 32),
        "layers": layers,
        "pool_type": "eos",
        "eos_id": EOS_ID,
        "pad_id": PAD_ID,
    }


def _vit_cfg(width: int, layers: int, patch: int) -> dict[str, Any]:
    return {
        "image_size": 64,
        "patch_size": patch,
        "width": width,
        "layers": layers,
        "head_width": 32,
        "mlp_ratio": 4.0,
    }


def _resnet_cfg(width: int, layers: list[int]) -> dict[str, Any]:
    # open_clip's ModifiedResNet: 4 stages, /32 overall, attention pooling over the last map.
    return {"image_size": 64, "layers": layers, "width": width, "head_width": 32}


# The recipe used unless a preset or a flag says otherwise.
DEFAULT_RECIPE: dict[str, Any] = {
    "steps": 2000,
    "batch_size": 128,
    "lr": 1e-3,
    "n_train": 50_000,
    "weight_decay": 0.1,
    "captions": "varied",
    "partial_p": 0.0,
    "n_scenes": 0,
    "aux_weight": 0.0,
    "hflip": False,
    "teacher": None,  # a model folder, relative to the repository (see --teacher)
    "distill_weight": 1.0,
    "hint_weight": 0.0,
    "vit_init": "default",  # or "mimetic" (see _mimetic_init)
}
VIT_INITS = ("default", "mimetic")
AUX_COLUMNS = ("shape", "colour", "size")

# The augmented-scenes recipe both shipped models are trained with: demo:shapes items plus
# training/scenes.py's scenes, varied and partial captions, the attribute heads, mirroring.
SCENES_RECIPE: dict[str, Any] = {
    "captions": "varied",
    "partial_p": 0.2,
    "n_train": 20_000,
    "n_scenes": 40_000,
    "aux_weight": 1.0,
    "hflip": True,
}
# Shared by both shipped models: the same words land in the same place for either model.
SHAPES_TEXT_CFG = _text_cfg(width=128, layers=2, context_length=16)

# Presets: a model config plus the recipe that goes with it (flags override the recipe).
PRESETS: dict[str, dict[str, Any]] = {
    # ResNet tower. Later stages start from the earlier weights (--init-from; the model card
    # lists the stages and their commands).
    "shapes-clip": {
        "model_cfg": {
            "embed_dim": 128,
            "vision_cfg": _resnet_cfg(width=16, layers=[1, 1, 1, 1]),
            "text_cfg": SHAPES_TEXT_CFG,
        },
        "train": {**SCENES_RECIPE, "steps": 400},
    },
    # The smaller ResNet (narrower towers, 64-d embedding). Its second stage starts from the
    # first recipe's weights (--init-from; the model card gives the commit and commands).
    "shapes-clip-small": {
        "model_cfg": {
            "embed_dim": 64,
            "vision_cfg": _resnet_cfg(width=12, layers=[1, 1, 1, 1]),
            "text_cfg": _text_cfg(width=96, layers=2, context_length=16),
        },
        "train": {**SCENES_RECIPE, "steps": 1000},
    },
    # ViT tower (patch 8: 64 tokens per 64x64 image), shipped as models/shapes-clip-small. A
    # default-initialised ViT this size barely learnt shape on this CPU budget; with a mimetic
    # start and shapes-clip as teacher (shared frozen text tower, distillation) it passes the
    # bar in 6500 steps (docs/training.md).
    "shapes-clip-vit": {
        "model_cfg": {
            "embed_dim": 128,
            "vision_cfg": _vit_cfg(width=64, layers=4, patch=8),
            "text_cfg": SHAPES_TEXT_CFG,
        },
        "train": {
            **SCENES_RECIPE,
            "steps": 6500,
            "teacher": "models/shapes-clip",
            "distill_weight": 5.0,
            "vit_init": "mimetic",
        },
    },
    # For tests: a fraction of a second per step.
    "tiny": {
        "model_cfg": {
            "embed_dim": 32,
            "vision_cfg": _vit_cfg(width=32, layers=1, patch=16),
            "text_cfg": _text_cfg(width=32, layers=1, context_length=16),
        },
        "train": {"captions": "varied", "partial_p": 0.2},
    },
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- tokenizer -------------------------------------------------------------------------------


def _all_prompts() -> list[str]:
    out = []
    for template in MAIN_TEMPLATES + PARTIAL_TEMPLATES:
        for shape in SHAPES:
            for colour in COLOURS:
                for size in SIZES:
                    for background in BACKGROUNDS:
                        out.append(fill_template(template, shape, colour, size, background))
    return out


def build_vocab() -> list[str]:
    """Special tokens, then every word our captions and prompts use, then extras; sorted."""
    words: set[str] = set(_EXTRA_WORDS)
    for text in _all_prompts():
        words.update(text.lower().replace(",", " ").replace(":", " ").split())
    return [PAD, UNK, EOS, *_PUNCTUATION, *sorted(words - set(_PUNCTUATION))]


def write_tokenizer(folder: Path, context_length: int) -> int:
    """Write a word-level HF tokenizer into ``folder``; returns the vocabulary size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = build_vocab()
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation runs
    # Every text ends in [EOS]: the text tower pools there (pool_type="eos").
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", special_tokens=[(EOS, EOS_ID)]
    )
    atomic_write_bytes(folder / "tokenizer.json", tok.to_str(pretty=True).encode())
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": PAD,
        "unk_token": UNK,
        "eos_token": EOS,
        "model_max_length": context_length,
        "padding_side": "right",
        "truncation_side": "right",
    }
    _write_json(folder / "tokenizer_config.json", config)
    return len(vocab)


# --- config ----------------------------------------------------------------------------------


def resolve_config(config: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A preset name, a JSON string or a JSON file → (model_cfg, train defaults)."""
    if config in PRESETS:
        preset = json.loads(json.dumps(PRESETS[config]))  # deep copy
        return preset["model_cfg"], preset["train"]
    not_config = f"--config: not a preset ({', '.join(PRESETS)}), JSON file or JSON"
    # JSON text is never taken for a path (a long one is an invalid file name: OSError).
    if config.lstrip().startswith("{"):
        text = config
    elif Path(config).is_file():
        text = Path(config).read_text()
    else:
        raise SystemExit(f"{not_config}: {config!r}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"{not_config}: {e}") from e
    if "model_cfg" in data:
        return data["model_cfg"], data.get("train", {})
    return data, {}


def _check_model_cfg(model_cfg: dict[str, Any]) -> None:
    text = model_cfg.get("text_cfg", {})
    vision = model_cfg.get("vision_cfg", {})
    if vision.get("image_size") != 64:
        raise SystemExit("--config: vision_cfg.image_size must be 64 (the shapes image size)")
    if text.get("pool_type") != "eos" or text.get("eos_id") != EOS_ID:
        raise SystemExit(f"--config: text_cfg needs pool_type 'eos' and eos_id {EOS_ID}")
    if not text.get("hf_tokenizer_name"):
        raise SystemExit("--config: text_cfg.hf_tokenizer_name must be set (local tokenizer)")


# --- data ------------------------------------------------------------------------------------


def render_pool(
    n: int, seed: int, threads: int, n_scenes: int = 0, scene_cache: Path | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``demo:shapes?n=n&seed=seed`` then ``n_scenes`` augmented scenes (``training/scenes.py``,
    same seed) as one uint8 (n + n_scenes, 3, 64, 64) array, with their columns; ``kind`` is 0
    for a demo item, 1 for a scene."""
    ds = open_shapes(n=n, seed=seed)
    pool = np.empty((n + n_scenes, 3, 64, 64), dtype=np.uint8)
    t0 = time.perf_counter()

    def render(i: int) -> None:
        pool[i] = np.asarray(ds.load_image(i)).transpose(2, 0, 1)

    # Each image depends only on (seed, i), so rendering order (and threads) cannot change it.
    step = max(1, n // 10)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as ex:
        for start in range(0, n, step):
            list(ex.map(render, range(start, min(n, start + step))))
            done = min(n, start + step)
            log(f"render: {done}/{n} images ({done / (time.perf_counter() - t0):.0f}/s)")
    cols = {k: ds.columns[k].astype(np.int64) for k in ("shape", "colour", "size", "background")}
    cols["template"] = ds.columns["template"].astype(np.int64)
    cols["kind"] = np.zeros(n, dtype=np.int64)
    if n_scenes:
        images, scene_cols = scene_pool(n_scenes, seed, scene_cache)
        pool[n:] = images
        for key in ("shape", "colour", "size"):
            cols[key] = np.concatenate([cols[key], scene_cols[key]])
        cols["background"] = np.concatenate([cols["background"], np.zeros(n_scenes, np.int64)])
        cols["template"] = np.concatenate([cols["template"], np.zeros(n_scenes, np.int64)])
        cols["kind"] = np.concatenate([cols["kind"], np.ones(n_scenes, np.int64)])
    return pool, cols


def scene_pool(
    n: int, seed: int, cache: Path | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` scenes as uint8 (n, 3, 64, 64) plus shape / colour / size columns.

    ``cache``: a folder where a rendered pool is kept (a scene depends only on its seed and
    index, so a cached pool is the same pixels as a fresh one; it only saves minutes).
    """
    from engine.store.cache import atomic_save_npy
    from training.scenes import GENERATOR_VERSION, render_scene

    path = None
    if cache is not None:
        path = Path(cache) / f"scenes-v{GENERATOR_VERSION}-seed{seed}-n{n}.npy"
        if path.is_file():
            packed = np.load(path)
            log(f"scenes: {n} from {path}")
            return packed[:, 3:].reshape(n, 3, 64, 64), _scene_columns(packed[:, :3])
    t0 = time.perf_counter()
    images = np.empty((n, 3, 64, 64), dtype=np.uint8)
    attrs = np.empty((n, 3), dtype=np.uint8)
    for i in range(n):
        pixels, scene = render_scene(seed, i)
        images[i] = pixels.transpose(2, 0, 1)
        attrs[i] = (scene.shape, scene.colour, scene.size)
        if (i + 1) % max(1, n // 10) == 0:
            log(f"scenes: {i + 1}/{n} ({(i + 1) / (time.perf_counter() - t0):.0f}/s)")
    if path is not None:
        atomic_save_npy(path, np.concatenate([attrs, images.reshape(n, -1)], axis=1))
    return images, _scene_columns(attrs)


def _scene_columns(attrs: np.ndarray) -> dict[str, np.ndarray]:
    return {k: attrs[:, j].astype(np.int64) for j, k in enumerate(("shape", "colour", "size"))}


class CaptionSampler:
    """Token ids for a batch of items, in the caption style chosen for training.

    All possible captions are tokenized once up front (a few thousand strings), so a batch is
    one table lookup. Scenes (``kind`` 1) never get a template naming the background: their
    backgrounds have no word in the vocabulary.
    """

    def __init__(self, tokenizer: Any, captions: str, partial_p: float) -> None:
        if captions not in ("fixed", "varied"):
            raise SystemExit("--captions must be 'fixed' or 'varied'")
        self.captions = captions
        self.partial_p = partial_p
        templates = MAIN_TEMPLATES + PARTIAL_TEMPLATES
        dims = (len(templates), len(SHAPES), len(COLOURS), len(SIZES), len(BACKGROUNDS))
        tokens = tokenizer(_all_prompts()).numpy()  # same nested order as the table dims
        self.table = tokens.reshape(*dims, tokens.shape[-1])
        self.n_main = len(MAIN_TEMPLATES)
        self.n_partial = len(PARTIAL_TEMPLATES)
        self.no_bg = np.array([i for i, t in enumerate(MAIN_TEMPLATES) if "{bg}" not in t])

    def __call__(self, cols: dict[str, np.ndarray], idx: np.ndarray, rng: np.random.Generator):
        n = len(idx)
        scene = cols["kind"][idx] == 1
        if self.captions == "fixed":
            # Demo items keep their own caption; a scene gets one fixed wording by its index.
            template = np.where(scene, self.no_bg[idx % len(self.no_bg)], cols["template"][idx])
        else:
            template = np.where(
                scene,
                self.no_bg[rng.integers(0, len(self.no_bg), n)],
                rng.integers(0, self.n_main, n),
            )
        if self.partial_p > 0:
            partial = rng.random(n) < self.partial_p
            template = np.where(partial, self.n_main + rng.integers(0, self.n_partial, n), template)
        return self.table[
            template,
            cols["shape"][idx],
            cols["colour"][idx],
            cols["size"][idx],
            cols["background"][idx],
        ]


# --- training --------------------------------------------------------------------------------


def _photo_names() -> list[str]:
    from training.scenes import photo_names

    return photo_names()


def _vocab(folder: Path) -> dict[str, int]:
    return json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]


def _require_model_folder(folder: Path, flag: str) -> None:
    missing = [
        n for n in (CONFIG_FILE, WEIGHTS_FILE, "tokenizer.json") if not (folder / n).is_file()
    ]
    if missing:
        raise SystemExit(
            f"{flag} {folder}: not a model folder of this script ({missing[0]} missing)"
        )


def _load_init(model: Any, folder: Path, staging: Path) -> None:
    """Start from the weights in ``folder`` (same architecture and vocabulary, else exit)."""
    from safetensors.torch import load_file

    _require_model_folder(folder, "--init-from")
    if _vocab(folder) != _vocab(staging):
        raise SystemExit(f"--init-from {folder}: its vocabulary differs from this run's")
    try:
        model.load_state_dict(load_file(folder / WEIGHTS_FILE), strict=True)
    except RuntimeError as exc:
        raise SystemExit(f"--init-from {folder}: not this architecture ({exc})") from None
    log(f"init: weights from {folder}")


def _load_teacher(model: Any, folder: Path, staging: Path, device: str) -> Any:
    """The CLIP in ``folder`` as a frozen teacher; its text tower and temperature are copied
    into ``model`` and frozen there too, so student and teacher share one embedding space and
    the zero-shot prompts land where the teacher put them."""
    from open_clip.model import CLIP
    from safetensors.torch import load_file

    _require_model_folder(folder, "--teacher")
    cfg = json.loads((folder / CONFIG_FILE).read_text())["model_cfg"]
    student_cfg = json.loads((staging / CONFIG_FILE).read_text())["model_cfg"]
    if _vocab(folder) != _vocab(staging) or cfg["text_cfg"] != student_cfg["text_cfg"]:
        raise SystemExit(f"--teacher {folder}: its tokenizer or text_cfg differs from this run's")
    if cfg["embed_dim"] != student_cfg["embed_dim"]:
        raise SystemExit(f"--teacher {folder}: embed_dim {cfg['embed_dim']} differs")
    teacher = CLIP(**cfg)
    teacher.load_state_dict(load_file(folder / WEIGHTS_FILE), strict=True)
    teacher.to(device).eval().requires_grad_(False)
    shared = {k: v for k, v in teacher.state_dict().items() if not k.startswith("visual.")}
    unexpected = model.load_state_dict(shared, strict=False).unexpected_keys
    if unexpected:
        raise SystemExit(f"--teacher {folder}: unexpected text weights {unexpected[:3]}")
    for name, p in model.named_parameters():
        if not name.startswith("visual."):
            p.requires_grad_(False)
    log(f"teacher: {folder} (text tower and temperature copied and frozen)")
    return teacher


class FeatureHints:
    """Feature-map hints from a ResNet teacher to a ViT student (as in FitNets).

    The teacher's stage-2 and stage-3 maps (8×8 and 4×4 for a 64×64 input) are targets for the
    student's patch tokens after its middle and last blocks (8×8 for patch 8, pooled to the
    teacher's grid), read through 1×1 convolutions that are trained with the student and not
    saved. Every location of every map is a target, so the student gets many more signals per
    image than the one embedding it is pulled towards: a ViT of this size otherwise learns
    shape far more slowly than a ResNet (docs/training.md).
    """

    def __init__(self, student: Any, teacher: Any, device: str) -> None:
        import torch

        visual = student.visual
        if not hasattr(visual, "transformer") or not hasattr(teacher.visual, "attnpool"):
            raise SystemExit("--hint-weight needs a ViT student and a ResNet teacher")
        layers = len(visual.transformer.resblocks)
        self.student_blocks = [max(0, layers // 2 - 1), layers - 1]
        self.student, self.teacher = student, teacher
        with torch.no_grad():
            probe = torch.zeros(1, 3, 64, 64, device=device)
            # ModifiedResNet blocks are stem, layer1..4; the last one is needed for its pooling.
            t_maps = teacher.visual.forward_intermediates(probe, indices=[2, 3, 4])
        channels = [m.shape[1] for m in t_maps["image_intermediates"][:2]]
        self.regressors = torch.nn.ModuleList(
            torch.nn.Conv2d(visual.transformer.width, c, 1) for c in channels
        ).to(device)

    def __call__(self, images: Any) -> tuple[Any, Any, Any]:
        """(student image embedding, teacher image embedding, hint loss); embeddings unit."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            t_out = self.teacher.visual.forward_intermediates(images, indices=[2, 3, 4])
        blocks = sorted(set(self.student_blocks))  # one block serves both hints in a 1-layer ViT
        s_out = self.student.visual.forward_intermediates(images, indices=blocks)
        s_maps = dict(zip(blocks, s_out["image_intermediates"], strict=True))
        loss = 0.0
        pairs = zip(self.student_blocks, t_out["image_intermediates"][:2], strict=True)
        for regressor, (block, t_map) in zip(self.regressors, pairs, strict=True):
            s_map = s_maps[block]
            s_map = F.adaptive_avg_pool2d(regressor(s_map), t_map.shape[-2:])
            cos = F.cosine_similarity(s_map, t_map, dim=1)  # per location
            loss = loss + (1 - cos).mean()
        image_f = F.normalize(s_out["image_features"], dim=-1)
        target = F.normalize(t_out["image_features"], dim=-1)
        return image_f, target, loss / len(self.regressors)


def _mimetic_init(visual: Any, seed: int) -> None:
    """Mimetic initialisation of a ViT tower (Trockman & Kolter, ICML 2023), in place.

    Every head's query-key product starts near a multiple of the identity and every value-output
    product near minus the identity, as trained ViTs' layers look; the learnable position
    embedding starts as the 2-D sine-cosine table, whose dot products fall off with distance.
    Together an attention layer starts out attending mostly to nearby patches, a convolution-like
    prior the default random start lacks: on the scenes a ViT trained this way began to learn
    shape within a few hundred steps where the default one had not moved (docs/training.md).
    Only starting values change; the saved model is a plain open_clip ViT.
    """
    import torch
    from open_clip.pos_embed import get_2d_sincos_pos_embed

    if not hasattr(visual, "transformer") or visual.positional_embedding.requires_grad is False:
        raise SystemExit("--vit-init mimetic needs a ViT tower with a learnable position embedding")
    gen = torch.Generator().manual_seed(seed)
    width = visual.transformer.width
    qk_noise, qk_eye, vo_noise, vo_eye = 0.7, 0.7, 0.4, 0.4  # the paper's values for small ViTs

    def factors(noise: float, eye: float) -> tuple[Any, Any, Any]:
        m = noise * torch.randn(width, width, generator=gen) / width**0.5 + eye * torch.eye(width)
        u, s, vh = torch.linalg.svd(m)
        return u, s.sqrt(), vh

    with torch.no_grad():
        table = get_2d_sincos_pos_embed(width, visual.grid_size[0], cls_token=True)
        visual.positional_embedding.copy_(torch.from_numpy(table).float())
        for block in visual.transformer.resblocks:
            attn = block.attn
            w_in, head = attn.in_proj_weight, width // attn.num_heads
            for h in range(attn.num_heads):
                # q . k = x W_q^T W_k y^T: each head gets a rank-`head` part of noise + identity.
                u, s, vh = factors(qk_noise, qk_eye)
                rows = slice(h * head, (h + 1) * head)
                w_in[rows] = (u[:, :head] * s[:head]).T.to(w_in)
                w_in[width:][rows] = (vh[:head].T * s[:head]).T.to(w_in)
            u, s, vh = factors(vo_noise, -vo_eye)  # W_v^T W_o^T = noise - identity
            w_in[2 * width :] = (u * s).T.to(w_in)
            attn.out_proj.weight.copy_((vh.T * s).to(w_in))


def _model_input(pixels: Any, mean: Any, std: Any, device: str) -> Any:
    """uint8 (n, 3, 64, 64) pool images → the normalised float batch the towers take."""
    return (pixels.to(device).float().div_(255.0) - mean) / std


def _teacher_targets(teacher: Any, pool: Any, mean: Any, std: Any, device: str) -> Any:
    """The frozen teacher's unit image embedding of every pool image, plain and mirrored:
    (n, 2, embed_dim). Computed once, so a step costs only the student's pass."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(pool), 512):
            images = _model_input(pool[start : start + 512], mean, std, device)
            plain = teacher.encode_image(images, normalize=True)
            mirrored = teacher.encode_image(images.flip(-1), normalize=True)
            out.append(torch.stack([plain, mirrored], dim=1))
    return torch.cat(out)


def _probe(model: Any, staging: Path, device: str, step: int) -> None:
    """Log the current weights' zero-shot accuracy (held-out demo:shapes and the other
    renderer) while training runs. Measurement only: it reads a copy of the weights, draws
    nothing from the training RNGs, and never changes what is trained."""
    from safetensors.torch import save_file

    from engine.models import clear_cache
    from training.eval_clip import evaluate, evaluate_holdout

    folder = staging / "probe"
    folder.mkdir(exist_ok=True)
    for name in (CONFIG_FILE, "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(staging / name, folder / name)
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    clear_cache()
    holdout = evaluate_holdout(folder, n_per_class=30, device=device)
    demo = evaluate(folder, n=300, device=device)["zero_shot"]
    clear_cache()
    shutil.rmtree(folder)
    log(
        f"probe step {step}: other renderer shape {holdout['shape_acc']:.3f} colour "
        f"{holdout['colour_acc']:.3f}; demo:shapes shape {demo['shape_acc_ensemble']:.3f} "
        f"colour {demo['colour_acc_ensemble']:.3f}"
    )


def _display_path(path: Path) -> str:
    """Repository-relative when inside the repository: shipped files carry no local paths."""
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


def _write_json(path: Path, obj: Any) -> None:
    # Key order kept as written (the summary reads top-down), unlike cache.atomic_write_json.
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _ordinary_permissions(folder: Path) -> None:
    """mkdtemp / mkstemp make 0700 / 0600; a shipped model folder should be readable."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for f in folder.iterdir():
        os.chmod(f, 0o666 & ~umask)


def _replace_dir(staging: Path, out: Path) -> None:
    """Move a finished ``staging`` folder to ``out``; an old ``out`` is kept until the end.

    A directory cannot be swapped with one ``os.replace`` when the target exists, so the old
    one is renamed aside first: readers see either the old complete folder or the new one
    (with a moment where neither exists), never a half-written one.
    """
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def train(
    out: Path,
    config: str = "shapes-clip",
    seed: int = 0,
    data_seed: int | None = None,
    warmup: int | None = None,
    init_from: Path | None = None,
    scene_cache: Path | None = None,
    threads: int = 1,
    device: str = "auto",
    evaluate: bool = True,
    probe_every: int = 0,
    eval_n: int = 2000,
    command: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train, save ``out`` atomically (config, tokenizer, weights, card) and return a summary.

    ``overrides``: recipe entries (the keys of ``DEFAULT_RECIPE``: ``steps``, ``lr``,
    ``teacher``, ...) replacing the preset's; ``None`` keeps the preset's value.
    """
    unknown = sorted(set(overrides) - set(DEFAULT_RECIPE))
    if unknown:
        raise TypeError(f"train() got entries that are not in the recipe: {unknown}")
    device = resolve_device(device)
    if device == "cuda":
        # Needed by cuBLAS for deterministic results; must be set before CUDA starts.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import open_clip
    import torch
    from open_clip.loss import ClipLoss
    from open_clip.model import CLIP
    from safetensors.torch import save as safetensors_bytes

    t_start = time.perf_counter()
    model_cfg, preset_recipe = resolve_config(config)
    given = {k: v for k, v in overrides.items() if v is not None}
    recipe = {**DEFAULT_RECIPE, **preset_recipe, **given}
    steps, batch_size, lr = recipe["steps"], recipe["batch_size"], recipe["lr"]
    n_train, n_scenes, hflip = recipe["n_train"], recipe["n_scenes"], bool(recipe["hflip"])
    captions, partial_p = recipe["captions"], recipe["partial_p"]
    weight_decay, aux_weight = recipe["weight_decay"], recipe["aux_weight"]
    distill_weight, hint_weight = recipe["distill_weight"], recipe["hint_weight"]
    vit_init = recipe["vit_init"]
    if vit_init not in VIT_INITS:
        raise SystemExit(f"--vit-init must be one of {', '.join(VIT_INITS)}, got {vit_init!r}")
    # A preset names its teacher relative to the repository; a flag, relative to where it runs.
    teacher = given.get("teacher") or (recipe["teacher"] and REPO_ROOT / recipe["teacher"])
    _check_model_cfg(model_cfg)
    if steps < 1 or batch_size < 2 or not 0.0 <= partial_p <= 1.0:
        raise SystemExit("need --steps >= 1, --batch-size >= 2 and 0 <= --partial-p <= 1")
    if n_train < max(100, batch_size):
        raise SystemExit(f"--n-train must be at least max(100, batch size), got {n_train}")
    context_length = int(model_cfg["text_cfg"]["context_length"])
    # The training images come from a seed the evaluation never uses (eval uses 10_000+).
    data_seed = 1000 + seed if data_seed is None else data_seed
    warmup = min(200, max(1, steps // 10)) if warmup is None else warmup

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    # Global torch settings are changed for the run and restored after it (tests and other
    # callers share the process).
    saved_threads = torch.get_num_threads()
    saved_det = torch.are_deterministic_algorithms_enabled()
    saved_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    # warn_only on CUDA: a few attention kernels have no deterministic variant there.
    torch.use_deterministic_algorithms(True, warn_only=device == "cuda")
    try:
        model_cfg["text_cfg"]["vocab_size"] = write_tokenizer(staging, context_length)
        _write_json(
            staging / CONFIG_FILE, {"model_cfg": model_cfg, "preprocess_cfg": PREPROCESS_CFG}
        )
        tokenizer = open_clip.get_tokenizer(f"local-dir:{staging}")
        sampler = CaptionSampler(tokenizer, captions, partial_p)

        pool, cols = render_pool(n_train, data_seed, threads, n_scenes, scene_cache)
        pool_t = torch.from_numpy(pool)
        n_pool = len(pool)

        model = CLIP(**model_cfg).to(device)
        if vit_init == "mimetic" and init_from is None:  # loaded weights would replace it
            _mimetic_init(model.visual, seed)
        if init_from is not None:
            _load_init(model, Path(init_from), staging)
        teacher_model = None
        if teacher is not None:
            teacher_model = _load_teacher(model, Path(teacher), staging, device)
        n_params = sum(p.numel() for p in model.parameters())
        # Auxiliary attribute heads on the image embedding (shape, colour, size): a direct
        # signal that makes the image tower separate shapes within a short CPU budget. They are
        # dropped at save time; zero-shot still goes through the text tower.
        named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
        if aux_weight > 0:
            n_out = len(SHAPES) + len(COLOURS) + len(SIZES)
            heads = torch.nn.Linear(model_cfg["embed_dim"], n_out).to(device)
            named += [(f"aux_heads.{n}", q) for n, q in heads.named_parameters()]
        hints = None
        if teacher_model is not None and hint_weight > 0:
            hints = FeatureHints(model, teacher_model, device)
            named += [(f"hints.{n}", q) for n, q in hints.regressors.named_parameters()]
        decay, no_decay = [], []
        for name, p in named:
            # As in open_clip's training code: no weight decay on gains, biases, temperature.
            skip = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
            (no_decay if skip or "logit_scale" in name else decay).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=lr,
            betas=(0.9, 0.98),
            eps=1e-6,
        )
        loss_fn = ClipLoss()
        rng = np.random.default_rng([seed, 17])
        order = rng.permutation(n_pool)
        cursor = 0
        mean = torch.tensor(PREPROCESS_CFG["mean"], device=device).view(1, 3, 1, 1)
        std = torch.tensor(PREPROCESS_CFG["std"], device=device).view(1, 3, 1, 1)
        targets = None
        if teacher_model is not None and hints is None and distill_weight > 0:
            t0 = time.perf_counter()
            targets = _teacher_targets(teacher_model, pool_t, mean, std, device)
            log(f"teacher: {n_pool} x 2 image embeddings in {time.perf_counter() - t0:.0f}s")

        log(
            f"train: {n_params / 1e6:.2f}M params, {steps} steps x {batch_size}, "
            f"captions={captions} partial_p={partial_p}, "
            f"device={device}, threads={threads}"
        )
        losses: list[float] = []
        t_train = time.perf_counter()
        model.train()
        for step in range(steps):
            if cursor + batch_size > n_pool:  # new epoch, new seeded order
                order = rng.permutation(n_pool)
                cursor = 0
            idx = np.sort(order[cursor : cursor + batch_size])
            cursor += batch_size
            text = torch.from_numpy(sampler(cols, idx, rng)).to(device)
            batch_cols = {k: torch.from_numpy(cols[k][idx]).to(device) for k in AUX_COLUMNS}
            idx_t = torch.from_numpy(idx)
            images = _model_input(pool_t[idx_t], mean, std, device)
            flip = torch.zeros(len(idx), dtype=torch.bool, device=device)
            if hflip:
                # Mirror half the batch: no shape or colour word changes under a left-right flip.
                flip = torch.from_numpy(rng.random(len(idx)) < 0.5).to(device)
                images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)

            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps, lr, warmup)
            if hints is None:
                image_f, text_f, scale = model(images, text)
                target = None
                if targets is not None:
                    target = targets[idx_t.to(device), flip.long()]
            else:
                image_f, target, hint_loss = hints(images)
                text_f = model.encode_text(text, normalize=True)
                scale = model.logit_scale.exp()
            loss = loss_fn(image_f, text_f, scale)
            if aux_weight > 0:
                logits = heads(image_f * 10.0)  # unit vectors scaled to a usable logit range
                n_s, n_c = len(SHAPES), len(COLOURS)
                aux = sum(
                    torch.nn.functional.cross_entropy(part, target)
                    for part, target in (
                        (logits[:, :n_s], batch_cols["shape"]),
                        (logits[:, n_s : n_s + n_c], batch_cols["colour"]),
                        (logits[:, n_s + n_c :], batch_cols["size"]),
                    )
                )
                loss = loss + aux_weight * aux / 3
            if target is not None and distill_weight > 0:
                # Pull each image embedding towards the teacher's (both unit vectors).
                loss = loss + distill_weight * (1 - (image_f * target).sum(-1)).mean()
            if hints is not None:
                loss = loss + hint_weight * hint_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # CLIP's cap on the temperature (logit scale <= 100)
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())

            if (step + 1) % 25 == 0 or step + 1 == steps:
                elapsed = time.perf_counter() - t_train
                rate = (step + 1) / elapsed
                recent = float(np.mean(losses[-25:]))
                log(
                    f"step {step + 1}/{steps}  loss {recent:.4f}  "
                    f"scale {model.logit_scale.detach().exp().item():.1f}  "
                    f"{rate * batch_size:.0f} img/s  ETA {(steps - step - 1) / rate:.0f}s"
                )
            if probe_every and (step + 1) % probe_every == 0 and step + 1 < steps:
                _probe(model, staging, device, step + 1)
        train_s = time.perf_counter() - t_train

        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        atomic_write_bytes(
            staging / WEIGHTS_FILE, safetensors_bytes(state, metadata={"format": "pt"})
        )
        size = sum(f.stat().st_size for f in staging.iterdir())
        summary: dict[str, Any] = {
            "out": _display_path(out),
            "config": config,
            "model_cfg": model_cfg,
            "steps": steps,
            "batch_size": batch_size,
            "seed": seed,
            "data_seed": data_seed,
            "n_train": n_train,
            "n_scenes": n_scenes,
            "aux_weight": aux_weight,
            "teacher": None if teacher is None else _display_path(Path(teacher).resolve()),
            "distill_weight": distill_weight if teacher is not None else None,
            "hint_weight": hint_weight if teacher is not None else None,
            "vit_init": vit_init,
            "hflip": hflip,
            "init_from": None if init_from is None else _display_path(Path(init_from).resolve()),
            "photos": _photo_names() if n_scenes else [],
            "lr": lr,
            "weight_decay": weight_decay,
            "warmup": warmup,
            "captions": captions,
            "partial_p": partial_p,
            "threads": threads,
            "device": device,
            "params": n_params,
            "final_loss": float(np.mean(losses[-50:])),
            "train_seconds": round(train_s, 1),
            "total_seconds": None,
            "folder_bytes": size,
            "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__},
            "command": command,
        }
        if size > MAX_MODEL_BYTES:
            log(f"warning: model folder is {size / 1e6:.1f} MB, over the 10 MB budget")
        if evaluate:
            from training.eval_clip import evaluate as run_eval
            from training.eval_clip import evaluate_holdout
            from training.model_card import write_model_card

            metrics = run_eval(staging, n=eval_n, device=device)
            metrics["model"] = _display_path(out)  # not the staging folder it was measured in
            holdout = evaluate_holdout(staging, device=device)
            summary["eval"] = metrics
            summary["eval_holdout"] = holdout
            summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
            write_model_card(staging, summary, metrics, holdout)
        else:
            summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
        _write_json(staging / "training.json", summary)
        _ordinary_permissions(staging)
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(saved_threads)
        torch.use_deterministic_algorithms(saved_det, warn_only=saved_warn)
    log(f"saved {out} ({summary['folder_bytes'] / 1e6:.2f} MB) in {summary['total_seconds']}s")
    return summary


def _weight_args(argv: list[str]) -> list[str]:
    """The arguments minus those that cannot change the weights (a cache folder, monitoring),
    so the recorded command is the one to document."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--scene-cache", "--probe-every"):
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


# Flags that override the preset's recipe (default None = the preset's value): name, type, what.
RECIPE_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("--steps", int, "training steps"),
    ("--batch-size", int, "images per step"),
    ("--lr", float, "peak learning rate"),
    ("--n-train", int, "generated demo:shapes training images"),
    ("--n-scenes", int, "augmented scenes (training/scenes.py)"),
    ("--aux-weight", float, "weight of the shape/colour/size heads' loss"),
    ("--partial-p", float, "share of partial prompts"),
    ("--weight-decay", float, "AdamW weight decay"),
    ("--warmup", int, "warm-up steps (default: a tenth of the steps, at most 200)"),
    ("--data-seed", int, "shapes and scenes seed (default: 1000 + --seed)"),
    ("--distill-weight", float, "weight of the pull towards the teacher (with --teacher)"),
    ("--hint-weight", float, "weight of the teacher's feature-map hints (with --teacher)"),
    ("--vit-init", str, f"initialisation of a ViT tower: {' or '.join(VIT_INITS)}"),
)
# Flags naming a model folder to start from.
FOLDER_FLAGS: tuple[tuple[str, str], ...] = (
    ("--init-from", "start from this folder's weights (same architecture and vocabulary)"),
    (
        "--teacher",
        "copy and freeze this folder's text tower and pull the image tower towards its image "
        "embeddings (same tokenizer, text_cfg and embed_dim)",
    ),
    ("--scene-cache", "keep rendered scenes here (same pixels; saves minutes on a re-run)"),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.train_clip", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", required=True, type=Path, help="model folder to (over)write")
    p.add_argument("--config", default="shapes-clip", help=f"preset ({', '.join(PRESETS)}) or JSON")
    for flag, kind, what in RECIPE_FLAGS:
        default = "" if "default:" in what else " (default: the preset's)"
        p.add_argument(flag, type=kind, default=None, help=what + default)
    for flag, what in FOLDER_FLAGS:
        p.add_argument(flag, type=Path, default=None, help=what)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--captions", choices=["fixed", "varied"], default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (see the docstring)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-eval", action="store_true", help="skip evaluation and model card")
    p.add_argument("--eval-n", type=int, default=2000)
    p.add_argument("--probe-every", type=int, default=0, help="log accuracy every N steps")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    args = vars(p.parse_args(argv))
    # Turn a plain `kill` into SystemExit so the staging folder is cleaned up on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    weight_args = _weight_args(sys.argv[1:] if argv is None else argv)
    as_json = args.pop("json")
    args["evaluate"] = not args.pop("no_eval")
    summary = train(**args, command="python -m training.train_clip " + " ".join(weight_args))
    if as_json:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
