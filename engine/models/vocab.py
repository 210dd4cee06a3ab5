"""Which words of a text a model's tokenizer does not know.

A word-level or WordPiece tokenizer maps a word outside its vocabulary to its unknown token
(``[UNK]``): two prompts that differ only in such words reach the text tower as the same
tokens, so the model cannot tell them apart. Byte-level BPE tokenizers (CLIP's, GPT-2's) spell
any word from bytes and never produce the unknown token: for them every word is "known" (which
says nothing about whether the model learnt it; ``engine.analysis.answerable`` checks the vectors
too).
"""

from __future__ import annotations

import re
from typing import Any

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*", re.UNICODE)


def words_of(text: str) -> list[str]:
    """The words of ``text`` (letters and digits; inner apostrophes and hyphens kept)."""
    return _WORD.findall(str(text))


def unknown_words(tokenizer: Any, text: str) -> list[str] | None:
    """Words of ``text`` that ``tokenizer`` (a Hugging Face tokenizer) turns into its unknown
    token, in order, without repeats; None when the tokenizer has no unknown token or cannot
    tokenize (then nothing can be said)."""
    unk = getattr(tokenizer, "unk_token", None)
    tokenize = getattr(tokenizer, "tokenize", None)
    if not unk or tokenize is None:
        return None
    out: list[str] = []
    for word in words_of(text):
        try:
            pieces = tokenize(word)
        except Exception:  # a tokenizer that cannot take one word cannot be judged
            return None
        if unk in pieces and word not in out:
            out.append(word)
    return out
