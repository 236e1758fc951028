"""The text half of a composed query, formed the same way by the triplets stage, stage 2 and evaluation.

A triplet's query text is its relative captions (joined as CLIP4Cir joins them: one fixed form at validation, four
drawn at random in training) followed by the reference image's sentence-level prompt (its attribute-aware
caption), so the text side knows what the reference looks like before it is asked to change it.
"""

from __future__ import annotations


def _clean(caption: str) -> str:
    return caption.strip().strip(".?, ")


def relative_text(caption1: str, caption2: str) -> str:
    """CLIP4Cir's validation-time join: first caption capitalised, ' and ', second caption."""
    first, second = _clean(caption1), _clean(caption2)
    if not second:
        return first.capitalize()
    if not first:
        return second.capitalize()
    return f"{first.capitalize()} and {second}"


def training_relative_texts(caption1: str, caption2: str) -> tuple[str, str, str, str]:
    """CLIP4Cir's training-time augmentation: 'c1 and c2', 'c2 and c1', c1 or c2; training draws one of the four
    uniformly for each example at each step (a pair with one caption has only the one text)."""
    first, second = _clean(caption1), _clean(caption2)
    if not second:
        return (relative_text(first, second),) * 4
    return relative_text(first, second), relative_text(second, first), first.capitalize(), second.capitalize()


def query_text(relative: str, prompt: str) -> str:
    """The text half of a composed query: relative text, then the reference's sentence-level prompt if any."""
    return f"{relative}. {prompt}" if prompt else relative


def triplet_query_text(caption1: str, caption2: str, prompt: str) -> str:
    """A triplet's query text as validation, evaluation and search form it."""
    return query_text(relative_text(caption1, caption2), prompt)


def training_query_texts(caption1: str, caption2: str, prompt: str) -> list[str]:
    """The four query texts training draws from (each relative-text form, then the prompt)."""
    return [query_text(relative, prompt) for relative in training_relative_texts(caption1, caption2)]
