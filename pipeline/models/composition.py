"""How a composed query is formed from normalised reference-image and text features: their normalised sum, or
CLIP4Cir's learned combiner. Plain torch, so mining (which has no encoder) composes queries the same way."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

QueryMode = Literal["composed", "text", "image"]
Composition = Literal["sum", "combiner"]


def normalised_sum(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The zero-shot composed query: the normalised sum of normalised image and text features."""
    return F.normalize(image + text, dim=-1)


class Combiner(nn.Module):
    """CLIP4Cir's combiner: a learned mixture of image and text features plus a gated residual of each."""

    def __init__(self, dim: int, projection_dim: int, hidden_dim: int):
        super().__init__()
        self.text_projection = nn.Linear(dim, projection_dim)
        self.image_projection = nn.Linear(dim, projection_dim)
        self.dropout = nn.Dropout(0.5)
        self.combiner_layer = nn.Linear(2 * projection_dim, hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, dim)
        self.dynamic_scalar = nn.Sequential(nn.Linear(2 * projection_dim, hidden_dim), nn.ReLU(), nn.Dropout(0.5),
                                            nn.Linear(hidden_dim, 1), nn.Sigmoid())

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        projected = torch.cat([self.dropout(F.relu(self.text_projection(text))),
                               self.dropout(F.relu(self.image_projection(image)))], dim=-1)
        combined = self.output_layer(self.dropout(F.relu(self.combiner_layer(projected))))
        gate = self.dynamic_scalar(projected)
        return combined + gate * text + (1 - gate) * image
