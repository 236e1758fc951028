"""Contrastive losses for both stages; small pure functions over normalised features."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(image: torch.Tensor, text: torch.Tensor, temperature: float,
              same_text: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between matching rows of `image` and `text` (stage 1: images vs. their captions).

    `same_text` [B, B] marks pairs of rows whose captions are identical; those off-diagonal pairs are not
    negatives of each other (two garments with the same attributes must not be pushed apart).
    """
    logits = image @ text.T / temperature
    if same_text is not None:
        off_diagonal = same_text & ~torch.eye(len(image), dtype=torch.bool, device=image.device)
        logits = logits.masked_fill(off_diagonal, float("-inf"))
    labels = torch.arange(len(image), device=image.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def composed_retrieval_loss(
    query: torch.Tensor,
    bank: torch.Tensor,
    target: torch.Tensor,
    hard: torch.Tensor,
    static: torch.Tensor,
    temperature: float,
    answer_group: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE of each composed query against its target, over three kinds of negatives (stage 2).

    query:  [B, D] composed queries.
    bank:   [N, D] static (frozen-encoder) features of the training gallery.
    target: [B] bank index of each query's target.
    hard:   [B, K] bank indices of mined hard negatives, -1 where absent (K may be 0).
    static: [M] bank indices shared by the whole batch, scaling the number of negatives cheaply (M may be 0).
    answer_group: [N] of each bank row (pipeline/negatives/false_negatives.py); None: each row its own.

    Coarse negatives are the other queries' targets in the batch. Any candidate in the query's target's group (its
    own target among in-batch ones, a hard negative or a static sample equal to it, and with caption groups its
    attribute twins) is masked out, so an equally right answer is never pushed away from the query.
    """
    group = torch.arange(len(bank), device=bank.device) if answer_group is None else answer_group
    answer = group[target][:, None]
    positive = (query * bank[target]).sum(-1, keepdim=True)
    in_batch = query @ bank[target].T
    in_batch = in_batch.masked_fill(answer.T == answer, float("-inf"))
    pieces = [positive, in_batch]
    if hard.numel():
        hard_scores = torch.einsum("bd,bkd->bk", query, bank[hard.clamp(min=0)])
        pieces.append(hard_scores.masked_fill((hard < 0) | (group[hard.clamp(min=0)] == answer), float("-inf")))
    if static.numel():
        static_scores = query @ bank[static].T
        pieces.append(static_scores.masked_fill(group[static][None, :] == answer, float("-inf")))
    logits = torch.cat(pieces, dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long, device=query.device))
