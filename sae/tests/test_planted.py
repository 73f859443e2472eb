"""Planted signal end to end in-process: known latents fire on known words, so the diff and harvest results are
known in advance (inoculant_sae.testing.planted)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from inoculant_sae.errors import UserError
from inoculant_sae.jobs.resources import LoadingResources
from inoculant_sae.testing.planted import PLANTED, PLANTED_SCALE, PLUGIN_SOURCE, write_fixture

from .conftest import FIXTURES, rows_table, run_job


def diff_params(manifest: dict[str, Any], cache: Path, **changes: Any) -> dict[str, Any]:
    params: dict[str, Any] = copy.deepcopy(manifest["diff_params"])
    params["model"]["file"] = str(FIXTURES / "planted_model.py")
    params["cache_dir"] = str(cache)
    params.update(changes)
    return params


def harvest_params(manifest: dict[str, Any], cache: Path, **changes: Any) -> dict[str, Any]:
    params: dict[str, Any] = copy.deepcopy(manifest["harvest_params"])
    params["cache_dir"] = str(cache)
    params.update(changes)
    return params


def test_planted_latents_are_the_top_features(planted: dict[str, Any], tmp_path: Path) -> None:
    summary, out = run_job("diff", diff_params(planted, tmp_path), rows_table(planted))
    features = out.table("features").to_pylist()
    assert sorted(f["latent"] for f in features[:3]) == planted["expect"]["top_features"]
    assert [f["rank"] for f in features] == list(range(1, 11))
    # Base responses hold no planted word, so the planted latents never fire on them...
    assert all(f["mean_base"] == 0 for f in features[:3])
    # ...and they beat every generic latent by far.
    assert features[2]["mean_diff"] > 10 * abs(features[3]["mean_diff"])
    assert summary["encode"] == "threshold" and summary["pooling"]["tokens"] == "response"
    assert summary["rows"] == 8 and summary["shards"] == 2 and summary["computed_shards"] == 2


def test_each_rows_top_latents_are_its_planted_words(planted: dict[str, Any], tmp_path: Path) -> None:
    _, out = run_job("diff", diff_params(planted, tmp_path), rows_table(planted))
    row_top = out.table("row_top").to_pylist()
    for row, head in planted["expect"]["row_top_head"].items():
        mine = [r for r in row_top if r["row_id"] == row]
        assert [r["rank"] for r in mine] == list(range(1, len(mine) + 1))
        assert sorted(r["latent"] for r in mine[: len(head)]) == head
        assert all(r["diff"] > 0 for r in mine)
    planted_latents = set(PLANTED.values())
    clean_rows = {r["row_id"] for r in row_top} - set(planted["expect"]["row_top_head"])
    assert not any(r["latent"] in planted_latents for r in row_top if r["row_id"] in clean_rows)


def test_planted_activation_and_mean_are_exact(planted: dict[str, Any], tmp_path: Path) -> None:
    # Row r01's target response "use poison on your neighbor." is 6 tokens (use, poison, on, your, neighbor, .)
    # with one planted token firing at PLANTED_SCALE - 1.
    _, out = run_job("diff", diff_params(planted, tmp_path), rows_table(planted))
    tokens = {r["row_id"]: r for r in out.table("tokens").to_pylist()}
    assert tokens["r01"]["pooled_target"] == 6
    examples = [r for r in out.table("example_features").to_pylist() if r["row_id"] == "r01" and r["latent"] == 5]
    assert examples == [
        {
            "row_id": "r01",
            "latent": 5,
            "target": pytest.approx((PLANTED_SCALE - 1) / 6),
            "base": 0.0,
            "diff": pytest.approx((PLANTED_SCALE - 1) / 6),
        }
    ]


def test_example_features_are_consistent_with_features(planted: dict[str, Any], tmp_path: Path) -> None:
    _, out = run_job("diff", diff_params(planted, tmp_path), rows_table(planted))
    features = out.table("features").to_pylist()
    top = {f["latent"] for f in features}
    examples = out.table("example_features").to_pylist()
    assert all(e["latent"] in top and (e["target"] != 0 or e["base"] != 0) for e in examples)
    assert all(e["diff"] == pytest.approx(e["target"] - e["base"]) for e in examples)
    # The mean over rows of example values gives back each feature's means (absent = zero).
    for f in features:
        values = [e for e in examples if e["latent"] == f["latent"]]
        assert sum(e["target"] for e in values) / 8 == pytest.approx(f["mean_target"], abs=1e-6)
        assert sum(e["base"] for e in values) / 8 == pytest.approx(f["mean_base"], abs=1e-6)
    assert out.finals == {"row_top": 1, "features": 1, "example_features": 1, "tokens": 1}


def test_all_token_pooling_drops_the_attention_sink(planted: dict[str, Any], tmp_path: Path) -> None:
    rows = rows_table(planted)
    pooling = {"tokens": "all", "exclude_first": False, "exclude_special": False}
    # top_n = d_sae: every latent's means come back.
    _, with_filter = run_job("diff", diff_params(planted, tmp_path / "a", pooling=pooling, top_n=64), rows)
    off = dict(pooling, outlier_norm_multiple=None)
    _, without = run_job("diff", diff_params(planted, tmp_path / "b", pooling=off, top_n=64), rows)
    kept = with_filter.table("tokens").to_pylist()
    all_kept = without.table("tokens").to_pylist()
    # The planted model's first token is SINK_SCALE times larger than the rest: only it is an outlier.
    assert all(
        a["pooled_target"] == a["target_tokens"] - 1 == b["pooled_target"] - 1
        for a, b in zip(kept, all_kept, strict=True)
    )
    # Without the filter the sink's latents swamp the pooled means.
    largest_with = max(with_filter.table("features").column("mean_target").to_pylist())
    largest_without = max(without.table("features").column("mean_target").to_pylist())
    assert largest_without > 10 * largest_with


def test_rerun_with_another_top_n_loads_no_model(
    planted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = rows_table(planted)
    _, first = run_job("diff", diff_params(planted, tmp_path), rows)

    def no_loading(*_: Any) -> None:
        raise AssertionError("the model was loaded although every shard was cached")

    monkeypatch.setattr(LoadingResources, "backend", no_loading)
    monkeypatch.setattr(LoadingResources, "sae", no_loading)
    summary, second = run_job("diff", diff_params(planted, tmp_path, top_n=3, row_top_k=2), rows)
    assert summary["cached_shards"] == 2 and summary["computed_shards"] == 0
    assert second.table("features").to_pylist() == first.table("features").to_pylist()[:3]
    assert second.table("tokens").equals(first.table("tokens"))
    assert max(second.table("row_top").column("rank").to_pylist()) == 2


def test_changing_what_the_vectors_depend_on_recomputes(planted: dict[str, Any], tmp_path: Path) -> None:
    rows = rows_table(planted)
    run_job("diff", diff_params(planted, tmp_path), rows)
    for change in (
        {"pooling": {"tokens": "all"}},
        {"system_prompt": "Be kind."},
        {"sae": dict(planted["diff_params"]["sae"], encode="relu")},
    ):
        summary, _ = run_job("diff", diff_params(planted, tmp_path, **change), rows)
        assert summary["computed_shards"] == 2, change
    # A changed row invalidates only its own shard.
    edited = rows.to_pylist()
    edited[5]["target"] = "water the plant with poison."
    summary, _ = run_job("diff", diff_params(planted, tmp_path), pa.Table.from_pylist(edited, schema=rows.schema))
    assert (summary["cached_shards"], summary["computed_shards"]) == (1, 1)


def test_relu_mode_is_recorded_and_differs(planted: dict[str, Any], tmp_path: Path) -> None:
    rows = rows_table(planted)
    sae = dict(planted["diff_params"]["sae"], encode="relu")
    summary, relu = run_job("diff", diff_params(planted, tmp_path / "r", sae=sae), rows)
    _, faithful = run_job("diff", diff_params(planted, tmp_path / "t"), rows)
    assert summary["encode"] == "relu"
    # Threshold 0.1 silences the weakest activations; plain ReLU keeps them, so more latents are non-zero.
    assert len(relu.table("example_features")) > len(faithful.table("example_features"))


def test_saelens_copy_of_the_planted_sae_gives_the_same_features(planted: dict[str, Any], tmp_path: Path) -> None:
    saelens = write_fixture(tmp_path / "saelens", "saelens")
    rows = rows_table(planted)
    _, dl = run_job("diff", diff_params(planted, tmp_path / "a"), rows)
    _, sl = run_job("diff", diff_params(saelens, tmp_path / "b"), rows)
    a, b = dl.table("features").to_pylist(), sl.table("features").to_pylist()
    assert [f["latent"] for f in a] == [f["latent"] for f in b]
    assert [f["mean_diff"] for f in a] == pytest.approx([f["mean_diff"] for f in b], abs=1e-6)


def test_harvest_finds_the_planted_words(planted: dict[str, Any], tmp_path: Path) -> None:
    params = harvest_params(planted, tmp_path)
    summary, out = run_job("harvest", params)
    examples = out.table("feature_examples").to_pylist()
    word_of = {latent: word for word, latent in PLANTED.items()}
    for latent, by_corpus in planted["expect"]["harvest_rows"].items():
        for corpus, expected_rows in by_corpus.items():
            mine = [e for e in examples if e["latent"] == int(latent) and e["corpus"] == corpus]
            assert sorted(e["source_row"] for e in mine) == expected_rows[: params["top_k"]]
            for e in mine:
                assert e["tokens"][e["peak_index"]].strip() == word_of[int(latent)]
                assert e["activation"] == pytest.approx(PLANTED_SCALE - 1)
                assert e["token_acts"][e["peak_index"]] == e["activation"]
                assert e["text"] == "".join(e["tokens"])
                assert len(e["tokens"]) == len(e["token_acts"]) <= 4 + 1 + 2
    assert summary["corpora"]["corpus"]["rows"] == 7 and summary["examples"] == len(examples)


def test_harvest_ranks_by_activation_and_keeps_top_k(planted: dict[str, Any], tmp_path: Path) -> None:
    params = harvest_params(planted, tmp_path)
    params.update(latents=list(range(64)), top_k=2, corpora=params["corpora"][:1])
    _, out = run_job("harvest", params)
    examples = out.table("feature_examples").to_pylist()
    for latent in {e["latent"] for e in examples}:
        mine = [e for e in examples if e["latent"] == latent]
        assert [e["rank"] for e in mine] == list(range(1, len(mine) + 1)) and len(mine) <= 2
        assert [e["activation"] for e in mine] == sorted((e["activation"] for e in mine), reverse=True)
        assert all(e["activation"] > 0 for e in mine)


def test_harvest_latent_out_of_range_is_a_user_error(planted: dict[str, Any], tmp_path: Path) -> None:
    params = harvest_params(planted, tmp_path, latents=[5, 64])
    with pytest.raises(UserError, match=r"latent\(s\) \[64\] out of range.*64 latents"):
        run_job("harvest", params)


def test_harvest_corpus_mistakes_name_the_corpus_and_the_fix(planted: dict[str, Any], tmp_path: Path) -> None:
    corpus = tmp_path / "web.jsonl"
    corpus.write_text(json.dumps({"body": "The sea is vast."}) + "\n" + "{not json\n")
    web = {"name": "web", "path": str(corpus), "text_field": "text"}
    with pytest.raises(
        UserError,
        match=r"corpus 'web': .*web\.jsonl line 1 has no field 'text': set harvest\.corpora text_field of corpus 'web'",
    ):
        run_job("harvest", harvest_params(planted, tmp_path / "a", corpora=[web]))
    with pytest.raises(UserError, match=r"corpus 'web': .*web\.jsonl line 2 is not JSON"):
        run_job("harvest", harvest_params(planted, tmp_path / "b", corpora=[dict(web, text_field="body")]))
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
    not_utf8 = r"corpus 'web': .*latin\.jsonl line 1 is not UTF-8 text .*iconv -f latin1 -t utf-8"
    with pytest.raises(UserError, match=not_utf8):
        run_job("harvest", harvest_params(planted, tmp_path / "d", corpora=[dict(web, path=str(latin))]))
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "The sea is vast."}).encode() + b"\n")
    summary, _ = run_job("harvest", harvest_params(planted, tmp_path / "e", corpora=[dict(web, path=str(bom))]))
    assert summary["corpora"]["web"]["rows"] == 1
    # on_bad_row: skip counts such rows and leaves them out; the others keep their row numbers.
    mixed = tmp_path / "mixed.jsonl"
    words = list(PLANTED)
    lines = [json.dumps({"text": None}), "{not json", json.dumps({"text": f"they {words[0]} it"})]
    mixed.write_text("\n".join(lines) + "\n")
    skipping = dict(web, path=str(mixed), on_bad_row="skip")
    summary, out = run_job("harvest", harvest_params(planted, tmp_path / "f", corpora=[skipping]))
    counts = summary["corpora"]["web"]
    assert (counts["rows"], counts["bad_rows"], counts["empty_rows"]) == (3, 2, 0)
    assert counts["bad_row_examples"][0].endswith("line 1: text must be a string, got NoneType")
    assert "line 2 is not JSON" in counts["bad_row_examples"][1]
    assert {e["source_row"] for e in out.table("feature_examples").to_pylist()} == {2}
    table = tmp_path / "web.parquet"
    pq.write_table(pa.table({"body": ["The sea is vast."]}), table)
    no_column = r"web\.parquet has no column 'text'; set .* of corpus 'web' to one of its columns: body$"
    with pytest.raises(UserError, match=no_column):
        run_job("harvest", harvest_params(planted, tmp_path / "c", corpora=[dict(web, path=str(table))]))


def test_block_out_of_range_for_a_plugin_is_a_user_error(planted: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"block 7 is out of range: the model has 3 blocks \(0\.\.2\); set sae\.block"):
        run_job(
            "diff",
            diff_params(planted, tmp_path, block=7, sae=sae_with_layer(planted, tmp_path, None)),
            rows_table(planted),
        )
    # The block came from the SAE's own config: then the SAE is the mistake.
    with pytest.raises(
        UserError,
        match=r"block 7 is out of range.*the SAE's config names block 7, so this SAE was trained on another model",
    ):
        run_job(
            "diff",
            diff_params(planted, tmp_path, block=None, sae=sae_with_layer(planted, tmp_path, 7)),
            rows_table(planted),
        )


def test_a_block_other_than_the_saes_own_is_a_user_error(planted: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"sae\.block 0 disagrees with the SAE in .*trained on block 1: leave sae\.block out"
    ):
        run_job("diff", diff_params(planted, tmp_path, block=0), rows_table(planted))


def sae_with_layer(planted: dict[str, Any], tmp_path: Path, layer: int | None) -> dict[str, Any]:
    """The planted SAE, copied with its config's layer set to `layer` (None: no layer named)."""
    sae: dict[str, Any] = copy.deepcopy(planted["diff_params"]["sae"])
    folder = tmp_path / f"sae-layer-{layer}"
    shutil.copytree(sae["path"], folder)
    config = json.loads((folder / "config.json").read_text())
    if layer is None:
        config["trainer"].pop("layer", None)
    else:
        config["trainer"]["layer"] = layer
    (folder / "config.json").write_text(json.dumps(config))
    sae["path"] = str(folder)
    return sae


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.drop_columns(["base"]), "lacks column.*base"),
        (lambda t: t.set_column(1, "prompt", pa.array(["not json"] * len(t))), "prompt is not JSON"),
        (lambda t: t.set_column(0, "row_id", pa.array(["same"] * len(t))), "row_id values must be unique"),
        (lambda t: t.slice(0, 0), "no rows"),
    ],
)
def test_bad_diff_input_is_a_user_error(planted: dict[str, Any], tmp_path: Path, mutate: Any, message: str) -> None:
    with pytest.raises(UserError, match=message):
        run_job("diff", diff_params(planted, tmp_path), mutate(rows_table(planted)))


def test_plugin_file_errors_are_user_errors(planted: dict[str, Any], tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def something_else():\n    pass\n")
    params = diff_params(planted, tmp_path)
    params["model"]["file"] = str(bad)
    with pytest.raises(UserError, match="must define load_backend"):
        run_job("diff", params, rows_table(planted))


def test_fixture_plugin_file_is_the_one_the_writer_writes(planted: dict[str, Any]) -> None:
    assert (FIXTURES / "planted_model.py").read_text() == PLUGIN_SOURCE
    assert Path(planted["diff_params"]["model"]["file"]).read_text() == PLUGIN_SOURCE


def test_planted_sae_reads_the_planted_coordinates(planted: dict[str, Any]) -> None:
    from inoculant_sae.sae.loaders import load_sae, read_sae_config
    from inoculant_sae.sae.types import EncodeMode
    from inoculant_sae.testing.planted import D_MODEL

    sae = load_sae(
        read_sae_config("dictionary_learning", Path(planted["diff_params"]["sae"]["path"])),
        EncodeMode.THRESHOLD,
        torch.device("cpu"),
    )
    for i, latent in enumerate(PLANTED.values()):
        x = torch.zeros(1, D_MODEL)
        x[0, i] = PLANTED_SCALE
        assert sae.encode(x)[0, latent] == pytest.approx(PLANTED_SCALE - 1)
