"""Export round trip on a tiny randomly initialised BERT: the ONNX artifact scores like the torch model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from search_common.artifacts import read_manifest, verify_checksums
from training.cross_encoder.export import QUANTIZATION_SCHEMES, export_cross_encoder
from training.cross_encoder.export import main as export_main
from training.cross_encoder.model import CrossEncoder, CrossEncoderConfig, base_model_path, load_cross_encoder


@pytest.fixture()
def tiny_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    # The exporter needs eager attention; BertConfig's typed signature does not take it as an argument.
    config._attn_implementation = "eager"
    body = BertModel(config, add_pooling_layer=False)
    model = CrossEncoder(body, CrossEncoderConfig(pooling="cls", num_layers=2, max_length=64))
    directory = tmp_path / "ckpt"
    model.save(directory, AutoTokenizer.from_pretrained(base_model_path()))
    return directory


def _feeds(directory: Path) -> dict[str, np.ndarray]:
    import tokenizers

    tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_truncation(64)
    tokenizer.enable_padding()
    pairs = [("does aspirin help", "Aspirin lowers the risk of heart attack."), ("cats", "Dogs like to run.")]
    encodings = tokenizer.encode_batch(pairs)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


@pytest.mark.parametrize("quantization", sorted(QUANTIZATION_SCHEMES))
def test_export_round_trip(tiny_checkpoint: Path, tmp_path: Path, quantization: str) -> None:
    import onnxruntime as ort

    out = export_cross_encoder(
        tiny_checkpoint,
        tmp_path / "v1",
        max_length=64,
        quantization=quantization,
        manifest_extra={"eval": {"x": 1.0}},
    )
    manifest = read_manifest(
        out, required=("format_version", "name", "version", "onnx", "files", "max_length")
    )
    verify_checksums(out, manifest["files"])
    assert manifest["version"] == "v1"
    assert manifest["quantization"] == quantization
    assert manifest["eval"] == {"x": 1.0}
    assert json.loads((out / "manifest.json").read_text())["num_layers"] == 2

    feeds = _feeds(out)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    (logits,) = session.run(["logits"], feeds)
    assert logits.shape == (2, 1) and logits.dtype == np.float32

    model, _ = load_cross_encoder(tiny_checkpoint)
    model.eval()
    with torch.inference_mode():
        expected = model(
            *(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
        )
    tolerance = 0.05 if quantization != "none" else 1e-4
    np.testing.assert_allclose(logits, expected.numpy(), atol=tolerance)
    if quantization in ("none", "int8-blockwise-weights"):  # batch-invariant: each row scored alone agrees
        (first,) = session.run(["logits"], {k: v[:1] for k, v in feeds.items()})
        np.testing.assert_allclose(first, logits[:1], atol=1e-5)


def test_export_refuses_an_unknown_quantization(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown quantization"):
        export_cross_encoder(tiny_checkpoint, tmp_path / "v1", max_length=64, quantization="int3")


def test_export_refuses_existing_target(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from search_common.artifacts import ArtifactError

    (tmp_path / "v1").mkdir()
    with pytest.raises(ArtifactError):
        export_cross_encoder(tiny_checkpoint, tmp_path / "v1", max_length=64)


def test_the_torch_program_scores_like_the_checkpoint_in_bfloat16(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = export_cross_encoder(tiny_checkpoint, tmp_path / "v1", max_length=64, quantization="none")
    manifest = read_manifest(out)
    assert manifest["torch_program"] == {"file": "model.pt2", "dtype": "bfloat16"}
    assert "model.pt2" in manifest["files"]
    program = torch.export.load(str(out / "model.pt2")).module()
    feeds = _feeds(out)
    model, _ = load_cross_encoder(tiny_checkpoint)
    model.eval()
    inputs = [torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]
    with torch.inference_mode():
        np.testing.assert_allclose(
            program(*inputs).float().numpy(), model(*inputs).numpy(), atol=0.05
        )  # bfloat16 against fp32
    without = export_cross_encoder(
        tiny_checkpoint, tmp_path / "v2", max_length=64, quantization="none", torch_program=False
    )
    assert read_manifest(without)["torch_program"] is None and not (without / "model.pt2").exists()


def test_a_re_export_carries_the_released_record(tiny_checkpoint: Path, tmp_path: Path) -> None:
    released = export_cross_encoder(
        tiny_checkpoint,
        tmp_path / "root" / "v1",
        max_length=64,
        quantization="none",
        torch_program=False,
        manifest_extra={"eval": {"fused_ndcg@10": 0.7}, "training_data_sha256": "ab" * 32},
    )
    export_main(
        ["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "root"), "--version", "v2",
         "--no-quantize", "--manifest-from", str(released)]
    )  # fmt: skip
    again = read_manifest(tmp_path / "root" / "v2")
    assert again["eval"] == {"fused_ndcg@10": 0.7} and again["training_data_sha256"] == "ab" * 32
    assert again["reexported_from"] == "v1" and again["version"] == "v2"
    assert again["torch_program"] == {"file": "model.pt2", "dtype": "bfloat16"}


def test_manifest_from_needs_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        export_main(["--untrained", "--out", str(tmp_path), "--manifest-from", str(tmp_path)])
    assert "--manifest-from goes with --checkpoint" in capsys.readouterr().err


def test_the_runtime_knows_which_export_schemes_keep_rows_apart() -> None:
    # The runtime refuses bucketed passes for the others: a renamed scheme must not silently become one.
    from model_runtimes.cross_encoder.contract import ROW_INDEPENDENT_QUANTIZATION
    from training.cross_encoder.export import QUANTIZATION_SCHEMES

    assert set(QUANTIZATION_SCHEMES) >= ROW_INDEPENDENT_QUANTIZATION
    assert {"int8-per-channel", "int8-per-channel-fp32-ffn-out"}.isdisjoint(ROW_INDEPENDENT_QUANTIZATION)
