"""Length-bucketed batching under a token budget: sort by length, then pack greedily, so each batch pads only
to its own longest sequence and batches hold as many sequences as the budget allows."""

from __future__ import annotations

from collections.abc import Sequence


def pack_by_length(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Indices into `lengths`, grouped so that len(batch) * max length in batch <= token_budget.

    Longest first: the first batch is the most memory-hungry, so an out-of-memory error shows at once rather than
    at the end of a long job. A sequence longer than the budget gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        # Sorted descending, so the batch's first sequence sets its padded width.
        if current and (len(current) + 1) * width > token_budget:
            batches.append(current)
            current = []
        if not current:
            width = lengths[i]
        current.append(i)
    if current:
        batches.append(current)
    return batches
