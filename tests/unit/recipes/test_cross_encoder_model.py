"""The cross-encoder module on a tiny random BERT: pooling, layer truncation, checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from training.cross_encoder.model import (
    CrossEncoder,
    CrossEncoderConfig,
    base_model_path,
    load_cross_encoder,
    truncate_layers,
)


def _body(layers: int = 3) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
    )
    return BertModel(config, add_pooling_layer=False)


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[101, 2000, 102, 3000, 102], [101, 2001, 102, 0, 0]])
    mask = (ids != 0).long()
    return ids, mask, torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_forward_shape_and_padding_invariance(pooling: str) -> None:
    model = CrossEncoder(_body(), CrossEncoderConfig(pooling=pooling, num_layers=3))  # type: ignore[arg-type]
    model.eval()
    ids, mask, types = _inputs()
    logits = model(ids, mask, types)
    assert logits.shape == (2, 1)
    alone = model(ids[1:, :3], mask[1:, :3], types[1:, :3])
    torch.testing.assert_close(logits[1:], alone, atol=1e-5, rtol=1e-5)


def test_unknown_pooling_is_refused() -> None:
    with pytest.raises(ValueError, match="CrossEncoder"):
        CrossEncoder(_body(), CrossEncoderConfig(pooling="max"))  # type: ignore[arg-type]


def test_truncate_layers() -> None:
    body = _body(3)
    truncate_layers(body, 2)
    assert len(body.encoder.layer) == 2 and body.config.num_hidden_layers == 2
    with pytest.raises(ValueError):
        truncate_layers(body, 3)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = CrossEncoder(_body(), CrossEncoderConfig(pooling="mean", num_layers=3, max_length=64))
    model.eval()
    model.save(tmp_path / "ckpt", AutoTokenizer.from_pretrained(base_model_path()))
    loaded, tokenizer = load_cross_encoder(tmp_path / "ckpt")
    loaded.eval()
    assert loaded.config == model.config
    with torch.inference_mode():
        torch.testing.assert_close(loaded(*_inputs()), model(*_inputs()))
    assert tokenizer("a", "b")["token_type_ids"] == [0, 0, 0, 1, 1]
