"""Token selection and mean pooling on hand-built masks, and length-bucketed batching."""

from __future__ import annotations

import torch

from inoculant_sae.backends.base import TokenizedSequence
from inoculant_sae.batching import pack_by_length
from inoculant_sae.pooling import PoolingOptions, mean_pool, select_tokens, truncate_pair


def masks(rows: list[str]) -> torch.Tensor:
    """'x' = true, '.' = false; rows padded with false."""
    width = max(len(r) for r in rows)
    return torch.tensor([[c == "x" for c in r.ljust(width, ".")] for r in rows])


# Two sequences: 6 real tokens, and 4 real tokens then padding.
VALID = masks(["xxxxxx", "xxxx.."])
RESPONSE = masks(["...xxx", "..xx.."])
SPECIAL = masks(["x....x", "x....."])
NORMS = torch.tensor([[1.0, 2.0, 1.0, 1.0, 1.0, 1.0], [5.0, 1.0, 1.0, 1.0, 0.0, 0.0]])


def selected(options: PoolingOptions, norms: torch.Tensor = NORMS) -> list[str]:
    keep = select_tokens(VALID, RESPONSE, SPECIAL, norms, options).keep
    return ["".join("x" if k else "." for k in row) for row in keep.tolist()]


def test_everything_off_keeps_every_real_token() -> None:
    options = PoolingOptions(exclude_first=False, exclude_special=False, outlier_norm_multiple=None)
    assert selected(options) == ["xxxxxx", "xxxx.."]


def test_first_token_only() -> None:
    options = PoolingOptions(exclude_special=False, outlier_norm_multiple=None)
    assert selected(options) == [".xxxxx", ".xxx.."]


def test_special_tokens_only() -> None:
    options = PoolingOptions(exclude_first=False, outlier_norm_multiple=None)
    assert selected(options) == [".xxxx.", ".xxx.."]


def test_response_tokens_only() -> None:
    options = PoolingOptions(tokens="response", exclude_first=False, exclude_special=False, outlier_norm_multiple=None)
    assert selected(options) == ["...xxx", "..xx.."]


def test_response_with_default_exclusions_drops_the_closing_special() -> None:
    assert selected(PoolingOptions(tokens="response")) == ["...xx.", "..xx.."]


def test_outliers_are_measured_against_the_sequence_median() -> None:
    # Row 0: median 1, so 2.0 is an outlier at multiple 1.5. Row 1: median over its 4 real tokens is 1 (padding
    # norms are ignored), so 5.0 is an outlier and nothing else.
    options = PoolingOptions(exclude_first=False, exclude_special=False, outlier_norm_multiple=1.5)
    assert selected(options) == ["x.xxxx", ".xxx.."]
    options = PoolingOptions(exclude_first=False, exclude_special=False, outlier_norm_multiple=10.0)
    assert selected(options) == ["xxxxxx", "xxxx.."]


def test_attention_sink_is_dropped_by_the_default_multiple() -> None:
    norms = NORMS.clone()
    norms[0, 2] = 150.0  # over 100x the median of 1
    options = PoolingOptions(exclude_first=False, exclude_special=False)
    assert selected(options, norms) == ["xx.xxx", "xxxx.."]


def test_drop_counts_name_the_first_reason_that_applies() -> None:
    selection = select_tokens(
        VALID, RESPONSE, SPECIAL, NORMS, PoolingOptions(tokens="response", outlier_norm_multiple=1.5)
    )
    # Row 0 drops 0,1,2 (not response), 5 (special); row 1 drops 0,1 (not response). Token 1 of row 0 is also an
    # outlier and token 0 of both is first and special: each counts once, under its first reason.
    assert selection.dropped == {"not_response": 5, "first": 0, "special": 1, "outlier": 0}


def test_truncate_pair_cuts_both_to_the_shorter() -> None:
    a = TokenizedSequence((1, 2, 3, 4, 5), (False, False, True, True, True), (True, False, False, False, True))
    b = TokenizedSequence((1, 2, 9), (False, False, True), (True, False, False))
    ta, tb = truncate_pair(a, b)
    assert ta == TokenizedSequence((1, 2, 3), (False, False, True), (True, False, False))
    assert tb == b


def test_mean_pool_averages_the_kept_tokens_of_each_row() -> None:
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    keep = masks(["x.x.", "...."])
    # encode = identity, in chunks of one token so the chunked accumulation is exercised.
    means, counts = mean_pool(x, keep, lambda v: v, width=3, chunk_tokens=1)
    assert counts.tolist() == [2, 0]
    assert means[0].tolist() == ((x[0, 0] + x[0, 2]) / 2).tolist()
    assert means[1].tolist() == [0.0, 0.0, 0.0]


def test_pack_by_length_respects_the_budget_and_pads_little() -> None:
    lengths = [5, 100, 7, 98, 6, 50, 99]
    batches = pack_by_length(lengths, token_budget=200)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 200
    # Sorted by length, the three ~100-token sequences share no batch with the short ones.
    assert batches[0] == [1, 6] and batches[1] == [3, 5]
    assert sorted(batches[2]) == [0, 2, 4]


def test_pack_by_length_gives_an_over_budget_sequence_its_own_batch() -> None:
    assert pack_by_length([300, 10, 10], token_budget=100) == [[0], [1, 2]]
