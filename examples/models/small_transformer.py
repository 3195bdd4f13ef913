"""A small transformer encoder classifier (4 layers, d_model 256), for compile-time measurements."""

from __future__ import annotations

import torch
from torch import nn


class SmallTransformer(nn.Module):
    def __init__(self, vocab: int = 8000, d_model: int = 256, heads: int = 4, layers: int = 4,
                 classes: int = 2, max_len: int = 512) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=4 * d_model, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        hidden = self.encoder(self.embed(tokens) + self.position(positions))
        return self.head(hidden.mean(dim=1))
