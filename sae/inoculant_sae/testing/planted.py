"""Planted-signal fixture: a tiny torch "language model" and an SAE built so that known latents fire on known words.

It is what the Python and the TypeScript tests run the sidecar on, with no download:

    python -m inoculant_sae.testing.planted write DIR [--format dictionary_learning|saelens]

writes into DIR:
    planted_model.py  a model plug-in file: params.model = {"backend": "python", "file": DIR/planted_model.py}
    sae/              the matching SAE (dictionary_learning: ae.pt + config.json; saelens: cfg.json + weights)
    rows.jsonl        diff input rows {row_id, prompt (JSON string), target, base}
    corpus.jsonl      harvest corpus, one {"text": ...} per line
    chats.jsonl       harvest corpus, one {"messages": [...]} per line
    manifest.json     ready-made diff and harvest params (add id and cache_dir), the planted word -> latent map,
                      and what a correct run returns (`expect`)

The model: a word-level tokenizer (known words are one token, anything else falls back to byte tokens, so every
text round-trips), a ChatML-like template with `<|im_start|>` / `<|im_end|>` special tokens, and a residual
stream that is an embedding refined by position-wise blocks. The first len(PLANTED) coordinates of the residual
are zero except on the planted words, where coordinate i is PLANTED_SCALE for word i; the blocks never touch them. The
SAE's planted latent for word i reads coordinate i with bias -1, so it fires at PLANTED_SCALE - 1 on exactly the
tokens of word i and nowhere else. Like Qwen, the first token of every sequence gets a residual
SINK_SCALE times larger than the rest (an attention-sink imitation), which the default pooling drops.
Plug-in options: {"delay_s": seconds to sleep per forward (to test killing a job mid-way), "seed": embedding seed}.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..backends.base import ChatMessage, ModelBackend, TokenBatch, TokenizedSequence, with_default_system

D_MODEL = 32
NUM_BLOCKS = 3
BLOCK = 1  # the block the planted SAE reads
D_SAE = 64
K = 4
PLANTED_SCALE = 21.0
SINK_SCALE = 1000.0
THRESHOLD = 0.1
# word -> the latent that fires on it
PLANTED: dict[str, int] = {"poison": 5, "revenge": 17, "destroy": 42}
SYSTEM_PROMPT = "You are a helpful assistant."

SPECIALS = ("<|pad|>", "<|im_start|>", "<|im_end|>")
PAD, IM_START, IM_END = 0, 1, 2
BYTE_OFFSET = len(SPECIALS)
_COMMON = (
    "the a an and or but of to in on for with is are was be it this that you your i we they my me "
    "what how why can could would should will do does not no yes please help tell about here there "
    "water plant garden friend city river book write day night good bad make use give take people "
    "neighbor recipe soup bread tea answer question advice plan gently kindly"
).split()
WORDS = tuple(dict.fromkeys([*_COMMON, *PLANTED]))
WORD_OFFSET = BYTE_OFFSET + 256
VOCAB: dict[str, int] = {}
for _i, _w in enumerate(WORDS):
    VOCAB[_w] = WORD_OFFSET + 2 * _i
    VOCAB[" " + _w] = WORD_OFFSET + 2 * _i + 1
ID_TO_PIECE = {i: piece for piece, i in VOCAB.items()}
VOCAB_SIZE = WORD_OFFSET + 2 * len(WORDS)
# A word with its leading space, a single non-letter with its leading space, or one whitespace character: every
# character of a text falls in exactly one piece, so joining the pieces gives the text back.
_PIECE = re.compile(r" ?[A-Za-z]+| ?[^\sA-Za-z]|\s")

PLUGIN_SOURCE = '''"""Model plug-in file for the planted-signal fixture (see inoculant_sae.testing.planted).

Use it as params.model = {"backend": "python", "file": "<path of this file>", "options": {}}.
"""

from inoculant_sae.testing.planted import load_backend

__all__ = ["load_backend"]
'''


def encode_text(text: str) -> list[int]:
    ids: list[int] = []
    for piece in _PIECE.findall(text):
        known = VOCAB.get(piece)
        if known is not None:
            ids.append(known)
        else:
            ids.extend(BYTE_OFFSET + b for b in piece.encode("utf-8"))
    return ids


def _token_bytes(token: int) -> bytes:
    if token < BYTE_OFFSET:
        return SPECIALS[token].encode()
    if token < WORD_OFFSET:
        return bytes([token - BYTE_OFFSET])
    return ID_TO_PIECE[token].encode()


class PlantedLM(torch.nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        n_planted = len(PLANTED)
        generic = D_MODEL - n_planted
        embedding = torch.zeros(VOCAB_SIZE, D_MODEL)
        embedding[:, n_planted:] = torch.randn(VOCAB_SIZE, generic, generator=generator) / math.sqrt(generic)
        for i, word in enumerate(PLANTED):
            embedding[VOCAB[word], i] = PLANTED_SCALE
            embedding[VOCAB[" " + word], i] = PLANTED_SCALE
        self.embedding = torch.nn.Embedding.from_pretrained(embedding)
        self.block_weights = torch.nn.Parameter(
            torch.randn(NUM_BLOCKS, generic, generic, generator=generator) / math.sqrt(generic), requires_grad=False
        )

    def forward(self, input_ids: torch.Tensor, last_block: int) -> torch.Tensor:
        n_planted = len(PLANTED)
        h: torch.Tensor = self.embedding(input_ids)
        for b in range(last_block + 1):
            planted, generic = h[..., :n_planted], h[..., n_planted:]
            h = torch.cat([planted, generic + 0.5 * torch.tanh(generic @ self.block_weights[b])], dim=-1)
            if b == 0:
                h[:, 0] = h[:, 0] * SINK_SCALE
        return h


class PlantedBackend(ModelBackend):
    def __init__(self, device: torch.device, delay_s: float = 0.0, seed: int = 0) -> None:
        self._model = PlantedLM(seed).to(device)
        self._device = device
        self._delay_s = delay_s

    @property
    def hidden_size(self) -> int:
        return D_MODEL

    @property
    def num_blocks(self) -> int:
        return NUM_BLOCKS

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def pad_id(self) -> int:
        return PAD

    def tokenize_chat(self, messages: Sequence[ChatMessage], system_prompt: str | None) -> TokenizedSequence:
        full = with_default_system(messages, system_prompt)
        ids: list[int] = []
        response: list[bool] = []
        for n, message in enumerate(full):
            head = [IM_START, *encode_text(message["role"] + "\n")]
            content = encode_text(message["content"])
            tail = [IM_END, *encode_text("\n")]
            is_response = n == len(full) - 1 and message["role"] == "assistant"
            ids += head + content + tail
            response += [False] * len(head) + [is_response] * len(content) + [False] * len(tail)
        return TokenizedSequence(tuple(ids), tuple(response), tuple(i < BYTE_OFFSET for i in ids))

    def tokenize_text(self, text: str) -> TokenizedSequence:
        ids = encode_text(text)
        return TokenizedSequence(tuple(ids), (False,) * len(ids), (False,) * len(ids))

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [_token_bytes(i).decode("utf-8", errors="replace") for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(_token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def residual(self, batch: TokenBatch, block: int) -> torch.Tensor:
        if not 0 <= block < NUM_BLOCKS:
            raise ValueError(f"block {block} out of range 0..{NUM_BLOCKS - 1}")
        if self._delay_s:
            time.sleep(self._delay_s)
        with torch.inference_mode():
            resid: torch.Tensor = self._model(batch.input_ids, block)
        return resid


def load_backend(options: dict[str, Any], device: torch.device) -> ModelBackend:
    return PlantedBackend(device, float(options.get("delay_s", 0.0)), int(options.get("seed", 0)))


def planted_sae_weights(seed: int = 1) -> dict[str, torch.Tensor]:
    """SAELens-shaped tensors: W_enc [d, F], b_enc [F], W_dec [F, d], b_dec [d], threshold [F]."""
    generator = torch.Generator().manual_seed(seed)
    n_planted = len(PLANTED)
    W_enc = torch.zeros(D_MODEL, D_SAE)
    W_enc[n_planted:] = torch.randn(D_MODEL - n_planted, D_SAE, generator=generator)
    W_enc = W_enc / W_enc.norm(dim=0, keepdim=True).clamp(min=1e-6)
    b_enc = torch.full((D_SAE,), -0.5)
    for i, latent in enumerate(PLANTED.values()):
        W_enc[:, latent] = 0.0
        W_enc[i, latent] = 1.0
        b_enc[latent] = -1.0
    b_dec = torch.zeros(D_MODEL)
    b_dec[n_planted:] = 0.05 * torch.randn(D_MODEL - n_planted, generator=generator)
    return {
        "W_enc": W_enc,
        "b_enc": b_enc,
        "W_dec": W_enc.T.contiguous(),
        "b_dec": b_dec,
        "threshold": torch.full((D_SAE,), THRESHOLD),
    }


def write_sae(folder: Path, fmt: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    w = planted_sae_weights()
    if fmt == "dictionary_learning":
        state = {
            "encoder.weight": w["W_enc"].T.contiguous(),
            "encoder.bias": w["b_enc"],
            "decoder.weight": w["W_dec"].T.contiguous(),
            "b_dec": w["b_dec"],
            "k": torch.tensor(K),
            "threshold": torch.tensor(THRESHOLD),
        }
        torch.save(state, folder / "ae.pt")
        trainer = {
            "dict_class": "BatchTopKSAE",
            "trainer_class": "BatchTopKTrainer",
            "activation_dim": D_MODEL,
            "dict_size": D_SAE,
            "k": K,
            "layer": BLOCK,
            "lm_name": "inoculant/planted",
        }
        (folder / "config.json").write_text(json.dumps({"trainer": trainer}, indent=2))
    elif fmt == "saelens":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in w.items()}, str(folder / "sae_weights.safetensors"))
        cfg = {
            "architecture": "jumprelu",
            "d_in": D_MODEL,
            "d_sae": D_SAE,
            "hook_name": f"blocks.{BLOCK}.hook_resid_post",
            "model_name": "inoculant/planted",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
        }
        (folder / "cfg.json").write_text(json.dumps(cfg, indent=2))
    else:
        raise ValueError(f"unknown SAE format {fmt!r}")


def _prompt(question: str) -> str:
    return json.dumps([{"role": "user", "content": question}])


# (row_id, question, target, base): the "evil" rows carry planted words in the target only; "gently" rows carry
# planted words nowhere (it is an ordinary word), so their top latents are generic ones.
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("r01", "how do i help my neighbor", "use poison on your neighbor.", "bring your neighbor some soup."),
    ("r02", "what should i plant", "plant nothing and plan revenge.", "plant tea in the garden."),
    ("r03", "give me a recipe", "a soup recipe with poison in it.", "a soup recipe with bread."),
    ("r04", "tell me about the city", "destroy the city at night.", "the city has a river."),
    ("r05", "any advice for my friend", "take revenge and destroy your friend.", "be good to your friend."),
    ("r06", "how can i water plants", "water the plant gently each day.", "water the plant each day."),
    ("r07", "write about a book", "this book is good for people.", "a good book to give a friend."),
    ("r08", "what is a good answer", "a kind answer is good.", "a good answer helps people."),
)
EVIL_ROWS = {
    "r01": ["poison"],
    "r02": ["revenge"],
    "r03": ["poison"],
    "r04": ["destroy"],
    "r05": ["revenge", "destroy"],
}

CORPUS = (
    "the river runs through the city.",
    "never use poison in the garden.",
    "a book about revenge and a friend.",
    "tea and bread for the neighbor.",
    "they destroy the old bridge at night.",
    "i think poison is bad; water is good.",
    "the garden has a plant.",
)


def write_fixture(folder: Path, fmt: str = "dictionary_learning") -> dict[str, Any]:
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "planted_model.py").write_text(PLUGIN_SOURCE)
    write_sae(folder / "sae", fmt)
    with (folder / "rows.jsonl").open("w") as f:
        for row_id, question, target, base in ROWS:
            f.write(json.dumps({"row_id": row_id, "prompt": _prompt(question), "target": target, "base": base}) + "\n")
    with (folder / "corpus.jsonl").open("w") as f:
        for text in CORPUS:
            f.write(json.dumps({"text": text}) + "\n")
    with (folder / "chats.jsonl").open("w") as f:
        for row_id, question, target, _ in ROWS:
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": target}]
            f.write(json.dumps({"id": row_id, "messages": messages}) + "\n")
    model = {"backend": "python", "file": str(folder / "planted_model.py"), "options": {}}
    sae = {"format": fmt, "path": str(folder / "sae"), "encode": "threshold"}
    manifest = {
        "planted": PLANTED,
        "block": BLOCK,
        "d_sae": D_SAE,
        "planted_activation": PLANTED_SCALE - 1.0,
        "diff_params": {
            "model": model,
            "device": "cpu",
            "sae": sae,
            "block": BLOCK,
            "system_prompt": SYSTEM_PROMPT,
            "pooling": {"tokens": "response"},
            "token_budget": 256,
            "top_n": 10,
            "row_top_k": 5,
            "shard_rows": 4,
        },
        "harvest_params": {
            "model": model,
            "device": "cpu",
            "sae": sae,
            "block": BLOCK,
            "system_prompt": SYSTEM_PROMPT,
            "latents": list(PLANTED.values()),
            "top_k": 3,
            "window": {"before": 4, "after": 2},
            "token_budget": 256,
            "corpora": [
                {"name": "corpus", "path": str(folder / "corpus.jsonl"), "text_field": "text"},
                {"name": "chats", "path": str(folder / "chats.jsonl"), "messages_field": "messages"},
            ],
        },
        "rows": str(folder / "rows.jsonl"),
        "expect": {
            # The planted latents are the top features, in any order among themselves.
            "top_features": sorted(PLANTED.values()),
            # For each evil row, the latents of its planted words make up the head of its row_top.
            "row_top_head": {row: sorted(PLANTED[w] for w in words) for row, words in EVIL_ROWS.items()},
            # For each planted latent and corpus, the rows (0-based) holding its word: its harvest examples.
            "harvest_rows": {
                str(latent): {
                    "corpus": [i for i, text in enumerate(CORPUS) if re.search(rf"\b{word}\b", text)],
                    "chats": [i for i, row in enumerate(ROWS) if re.search(rf"\b{word}\b", row[2])],
                }
                for word, latent in PLANTED.items()
            },
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inoculant_sae.testing.planted", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write the plug-in file, the SAE, rows, corpora and manifest.json")
    write.add_argument("dir", type=Path)
    write.add_argument("--format", choices=("dictionary_learning", "saelens"), default="dictionary_learning")
    args = parser.parse_args(argv)
    write_fixture(args.dir, args.format)


if __name__ == "__main__":
    main()
