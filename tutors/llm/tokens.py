"""Counting prompt tokens for models whose tokenizer is not at hand."""

from __future__ import annotations


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate for remote models: CJK characters are about a token each,
    other text about three characters a token (English averages nearer four: this errs high,
    so a trimmed prompt still fits)."""
    cjk = sum(
        1 for ch in text if "\u2e80" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or "\uf900" <= ch <= "\ufaff"
    )
    return cjk + -(-(len(text) - cjk) // 3) + 4
