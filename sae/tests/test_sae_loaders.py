"""Every SAE format x architecture x encode mode: files written here by hand in the format's own layout, loaded
through the loader table, and checked against encode math written out in numpy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from inoculant_sae.errors import UserError
from inoculant_sae.sae.loaders import load_sae, read_sae_config
from inoculant_sae.sae.types import Architecture, EncodeMode

D_IN, D_SAE, K = 16, 64, 6


@dataclass
class Weights:
    W_enc: np.ndarray  # [d, F]
    b_enc: np.ndarray
    W_dec: np.ndarray  # [F, d]
    b_dec: np.ndarray
    threshold: np.ndarray  # [] or [F]


def random_weights(per_latent_threshold: bool, seed: int = 0) -> Weights:
    rng = np.random.default_rng(seed)
    threshold = rng.uniform(0.0, 0.6, D_SAE) if per_latent_threshold else np.array(0.3)
    return Weights(
        W_enc=rng.normal(size=(D_IN, D_SAE)).astype(np.float32) / 4,
        b_enc=rng.normal(size=D_SAE).astype(np.float32) / 4,
        W_dec=rng.normal(size=(D_SAE, D_IN)).astype(np.float32),
        b_dec=rng.normal(size=D_IN).astype(np.float32),
        threshold=threshold.astype(np.float32),
    )


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def write_dictionary_learning(folder: Path, dict_class: str, w: Weights, with_threshold: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "encoder.weight": t(w.W_enc.T),
        "encoder.bias": t(w.b_enc),
        "decoder.weight": t(w.W_dec.T),
    }
    # The standard AutoEncoder names its decoder bias `bias`; BatchTopK and TopK name it `b_dec`.
    state["bias" if dict_class == "AutoEncoder" else "b_dec"] = t(w.b_dec)
    if dict_class != "AutoEncoder":
        state["k"] = torch.tensor(K)
        if with_threshold:
            state["threshold"] = t(w.threshold)
    torch.save(state, folder / "ae.pt")
    trainer = {
        "dict_class": dict_class,
        "activation_dim": D_IN,
        "dict_size": D_SAE,
        "k": K,
        "layer": 3,
        "lm_name": "tiny",
    }
    (folder / "config.json").write_text(json.dumps({"trainer": trainer}))


def write_saelens(
    folder: Path, architecture: str, w: Weights, apply_b_dec: bool = True, hook: str = "blocks.3.hook_resid_post"
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": t(w.W_enc), "b_enc": t(w.b_enc), "W_dec": t(w.W_dec), "b_dec": t(w.b_dec)}
    if architecture == "jumprelu":
        tensors["threshold"] = t(w.threshold)
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    cfg: dict[str, object] = {
        "architecture": architecture,
        "d_in": D_IN,
        "d_sae": D_SAE,
        "hook_name": hook,
        "model_name": "tiny",
        "apply_b_dec_to_input": apply_b_dec,
        "normalize_activations": "none",
    }
    if architecture == "topk":
        cfg["activation_fn_kwargs"] = {"k": K}
    (folder / "cfg.json").write_text(json.dumps(cfg))


def reference_encode(x: np.ndarray, w: Weights, architecture: str, mode: str, apply_b_dec: bool = True) -> np.ndarray:
    """The encode of each architecture, written out independently of the package."""
    x64 = x.astype(np.float64)
    pre: np.ndarray = ((x64 - w.b_dec) if apply_b_dec else x64) @ w.W_enc.astype(np.float64) + w.b_enc
    out: np.ndarray
    if architecture == "topk":
        out = np.zeros_like(pre)
        for row in range(pre.shape[0]):
            top = np.argsort(-pre[row])[:K]
            out[row, top] = np.maximum(pre[row, top], 0.0)
        return out
    out = np.maximum(pre, 0.0)
    if architecture in ("batchtopk", "jumprelu") and mode == "threshold":
        out = np.where(pre > w.threshold, out, 0.0)
    return out


CASES = [
    ("dictionary_learning", "BatchTopKSAE", "batchtopk"),
    ("dictionary_learning", "AutoEncoderTopK", "topk"),
    ("dictionary_learning", "AutoEncoder", "standard"),
    ("saelens", "standard", "standard"),
    ("saelens", "topk", "topk"),
    ("saelens", "jumprelu", "jumprelu"),
]


def write_case(folder: Path, fmt: str, kind: str, w: Weights) -> None:
    if fmt == "dictionary_learning":
        write_dictionary_learning(folder, kind, w)
    else:
        write_saelens(folder, kind, w)


@pytest.mark.parametrize("mode", ["threshold", "relu"])
@pytest.mark.parametrize("fmt, kind, architecture", CASES)
def test_loader_matches_hand_written_encode(tmp_path: Path, fmt: str, kind: str, architecture: str, mode: str) -> None:
    w = random_weights(per_latent_threshold=fmt == "saelens")
    write_case(tmp_path, fmt, kind, w)
    config = read_sae_config(fmt, tmp_path)
    assert (config.d_in, config.d_sae, config.architecture, config.block) == (
        D_IN,
        D_SAE,
        Architecture(architecture),
        3,
    )
    sae = load_sae(config, EncodeMode(mode), torch.device("cpu"))
    x = np.random.default_rng(1).normal(size=(40, D_IN)).astype(np.float32)
    got = sae.encode(torch.from_numpy(x)).numpy()
    want = reference_encode(x, w, architecture, mode)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The test is only meaningful if the case has both firing and silent latents.
    assert 0 < (want > 0).mean() < 1
    latents = torch.tensor([3, 0, 63, 17])
    np.testing.assert_allclose(
        sae.encode_latents(torch.from_numpy(x), latents).numpy(), want[:, [3, 0, 63, 17]], rtol=1e-5, atol=1e-5
    )
    acts = np.abs(np.random.default_rng(2).normal(size=(5, D_SAE))).astype(np.float32)
    np.testing.assert_allclose(
        sae.decode(torch.from_numpy(acts)).numpy(), acts @ w.W_dec + w.b_dec, rtol=1e-5, atol=1e-4
    )


def test_threshold_and_relu_modes_differ_on_a_batchtopk_sae(tmp_path: Path) -> None:
    w = random_weights(per_latent_threshold=False)
    write_dictionary_learning(tmp_path, "BatchTopKSAE", w)
    config = read_sae_config("dictionary_learning", tmp_path)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(40, D_IN)).astype(np.float32))
    faithful = load_sae(config, EncodeMode.THRESHOLD, torch.device("cpu")).encode(x)
    relu = load_sae(config, EncodeMode.RELU, torch.device("cpu")).encode(x)
    assert (relu > 0).sum() > (faithful > 0).sum()
    assert torch.all(faithful[faithful > 0] > 0.3)


def test_saelens_without_b_dec_subtraction(tmp_path: Path) -> None:
    w = random_weights(per_latent_threshold=False)
    write_saelens(tmp_path, "standard", w, apply_b_dec=False)
    sae = load_sae(read_sae_config("saelens", tmp_path), EncodeMode.THRESHOLD, torch.device("cpu"))
    x = np.random.default_rng(1).normal(size=(8, D_IN)).astype(np.float32)
    np.testing.assert_allclose(
        sae.encode(torch.from_numpy(x)).numpy(),
        reference_encode(x, w, "standard", "threshold", apply_b_dec=False),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "hook, block",
    [("blocks.3.hook_resid_post", 3), ("blocks.4.hook_resid_pre", 3), ("model.layers.3", 3), ("layers.7", 7)],
)
def test_saelens_hook_names_give_the_block(tmp_path: Path, hook: str, block: int) -> None:
    write_saelens(tmp_path, "standard", random_weights(False), hook=hook)
    assert read_sae_config("saelens", tmp_path).block == block


def test_missing_ae_pt_names_the_file(tmp_path: Path) -> None:
    write_dictionary_learning(tmp_path, "BatchTopKSAE", random_weights(False))
    (tmp_path / "ae.pt").unlink()
    with pytest.raises(UserError, match=r"ae\.pt not found"):
        read_sae_config("dictionary_learning", tmp_path)


def test_missing_folder_says_what_a_folder_holds(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="holds ae.pt and config.json"):
        read_sae_config("dictionary_learning", tmp_path / "nope")


def test_a_damaged_ae_pt_says_so_in_one_line(tmp_path: Path) -> None:
    write_dictionary_learning(tmp_path, "BatchTopKSAE", random_weights(False))
    data = (tmp_path / "ae.pt").read_bytes()
    (tmp_path / "ae.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        UserError, match=r"cannot read .*ae\.pt as a PyTorch state dict \(.*\): the file is damaged or incomplete"
    ) as caught:
        load_sae(read_sae_config("dictionary_learning", tmp_path), EncodeMode.THRESHOLD, torch.device("cpu"))
    assert "\n" not in str(caught.value)


def test_weights_that_do_not_fit_the_config(tmp_path: Path) -> None:
    write_dictionary_learning(tmp_path, "BatchTopKSAE", random_weights(False))
    config = json.loads((tmp_path / "config.json").read_text())
    config["trainer"]["activation_dim"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        UserError, match=r"ae\.pt: encoder\.weight has shape \[64, 16\], but the config says \[64, 32\]"
    ):
        load_sae(read_sae_config("dictionary_learning", tmp_path), EncodeMode.THRESHOLD, torch.device("cpu"))


def test_unsupported_dict_class(tmp_path: Path) -> None:
    write_dictionary_learning(tmp_path, "GatedAutoEncoder", random_weights(False))
    with pytest.raises(UserError, match="GatedAutoEncoder.*supported: BatchTopKSAE"):
        read_sae_config("dictionary_learning", tmp_path)


def test_threshold_mode_needs_a_threshold(tmp_path: Path) -> None:
    write_dictionary_learning(tmp_path, "BatchTopKSAE", random_weights(False), with_threshold=False)
    config = read_sae_config("dictionary_learning", tmp_path)
    with pytest.raises(UserError, match="no threshold.*encode 'relu'"):
        load_sae(config, EncodeMode.THRESHOLD, torch.device("cpu"))
    assert load_sae(config, EncodeMode.RELU, torch.device("cpu")).d_sae == D_SAE


def test_saelens_jumprelu_without_threshold_tensor(tmp_path: Path) -> None:
    write_saelens(tmp_path, "standard", random_weights(True))
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps(cfg | {"architecture": "jumprelu"}))
    with pytest.raises(UserError, match="no tensor 'threshold'"):
        load_sae(read_sae_config("saelens", tmp_path), EncodeMode.THRESHOLD, torch.device("cpu"))


def test_saelens_non_residual_hook_is_refused(tmp_path: Path) -> None:
    write_saelens(tmp_path, "standard", random_weights(False), hook="blocks.3.hook_mlp_out")
    with pytest.raises(UserError, match="not a residual-stream hook"):
        read_sae_config("saelens", tmp_path)
