"""The tiny text-conditional flow-matching network of the shapes world: a small conv UNet.

Text: word tokens -> embedding + positions -> `text_layers` transformer layers (or, with
`text_encoder = "gru"`, a bidirectional GRU). Time and pooled text modulate every residual block
(FiLM); cross-attention over text tokens at 16x16 and 8x8, self-attention at 8x8 so that global layout
(counting, relative position) can be coordinated across the image; optionally (`position_embedding`) a
2D position code added at 16x16 and 8x8 before those attention layers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nft_shapes.world import IMAGE_SIZE

TEXT_ENCODERS = ("transformer", "gru")
"""`transformer`: learned positions + `text_layers` transformer layers. `gru`: a bidirectional GRU with
`text_layers` layers (as AttnGAN's BiLSTM), order-aware by construction: each word's state carries its
neighbours ("red" next to "circle") and its side of a relation word."""


def check_text_encoder(name: str) -> None:
    """ValueError naming the allowed text encoders unless `name` is one of them."""
    if name not in TEXT_ENCODERS:
        raise ValueError(f"text_encoder: {name!r} is not one of {list(TEXT_ENCODERS)}")


@dataclass(frozen=True)
class TinyUNetConfig:
    """Architecture hyper-parameters (saved next to the weights)."""

    vocab_size: int
    max_tokens: int = 8
    text_dim: int = 64
    text_layers: int = 1
    channels: tuple[int, int, int] = (32, 64, 128)
    time_dim: int = 128
    heads: int = 4
    image_channels: int = 3
    position_embedding: bool = False
    token_init_std: float = 0.02
    text_encoder: str = "transformer"

    def __post_init__(self) -> None:
        check_text_encoder(self.text_encoder)

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TinyUNetConfig:
        """Inverse of `to_dict`."""
        data = dict(data)
        data["channels"] = tuple(data["channels"])
        return cls(**data)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000 as diffusion models do)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class TextEncoder(nn.Module):
    """Token embedding with learned positions and a small transformer; returns tokens and a pooled vector."""

    def __init__(self, config: TinyUNetConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(config.vocab_size, config.text_dim)
        self.positions = nn.Parameter(torch.zeros(config.max_tokens, config.text_dim))
        # Tokens and positions should start at the same scale (0.02). With PyTorch's default N(0, 1) token
        # embeddings (norm ~8 against ~0.16 for the positions; `token_init_std = 1.0`, how the first
        # checkpoint was made) the encoder is close to a bag of words: "a circle left of a square" and "a
        # square left of a circle" pooled to within 2% after pretraining.
        if config.token_init_std != 1.0:  # 1.0 is nn.Embedding's own init, already drawn: keep the RNG stream
            nn.init.normal_(self.embed.weight, std=config.token_init_std)
        nn.init.normal_(self.positions, std=0.02)
        layer = nn.TransformerEncoderLayer(
            config.text_dim,
            config.heads,
            dim_feedforward=2 * config.text_dim,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, config.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.text_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.embed(tokens) + self.positions[: tokens.shape[1]]
        hidden = self.norm(self.layers(hidden, src_key_padding_mask=~mask))
        return hidden, masked_mean(hidden, mask)


class GRUTextEncoder(nn.Module):
    """Token embedding and a bidirectional GRU over the real (unpadded) tokens; returns tokens and their
    mean. The word order reaches every state, so "a red circle and a blue square" and "a blue circle and a
    red square" (or the two sides of "left of") are told apart from the first step of training."""

    def __init__(self, config: TinyUNetConfig) -> None:
        super().__init__()
        if config.text_dim % 2:
            raise ValueError(f"text_dim must be even for a bidirectional GRU, got {config.text_dim}")
        self.embed = nn.Embedding(config.vocab_size, config.text_dim)
        nn.init.normal_(self.embed.weight, std=config.token_init_std)
        self.gru = nn.GRU(
            config.text_dim, config.text_dim // 2, config.text_layers, batch_first=True, bidirectional=True
        )
        self.norm = nn.LayerNorm(config.text_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(tokens), lengths, batch_first=True, enforce_sorted=False
        )
        output, _ = self.gru(packed)
        hidden, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=tokens.shape[1])
        hidden = self.norm(hidden)
        return hidden, masked_mean(hidden, mask)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` `[N, T, D]` over the positions where `mask` `[N, T]` is true."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def grid_embedding(size: int, dim: int) -> torch.Tensor:
    """Fixed 2D sinusoidal position code `[dim, size, size]`: half the channels encode x, half y."""
    quarter = dim // 4
    freqs = torch.exp(-math.log(100.0) * torch.arange(quarter, dtype=torch.float32) / quarter)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 * math.pi
    angles = coords[:, None] * freqs[None] * size / 4  # [size, quarter]
    axis = torch.cat([angles.sin(), angles.cos()], dim=1).T  # [dim/2, size]
    x = axis[:, None, :].expand(-1, size, -1)
    y = axis[:, :, None].expand(-1, -1, size)
    return torch.cat([x, y], dim=0)


class PositionCode(nn.Module):
    """Adds a learned projection of a fixed 2D sinusoidal code to a feature map, so that attention (which
    is permutation-invariant) and the deep convolutions know where they are: "left of" needs that."""

    def __init__(self, channels: int, size: int, dim: int = 32) -> None:
        super().__init__()
        self.register_buffer("code", grid_embedding(size, dim)[None], persistent=False)
        self.project = nn.Conv2d(dim, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.code.to(x.dtype))


class ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm, modulated by the conditioning vector (FiLM)."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(8, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(h)


class Attention(nn.Module):
    """Multi-head attention of image positions over a context (text tokens, or the image itself)."""

    def __init__(self, channels: int, context_dim: int | None, heads: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.attn = nn.MultiheadAttention(
            channels, heads, kdim=context_dim or channels, vdim=context_dim or channels, batch_first=True
        )
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        n, c, h, w = x.shape
        query = self.norm(x).flatten(2).transpose(1, 2)
        keys = query if context is None else context
        padding = None if mask is None else ~mask
        out, _ = self.attn(query, keys, keys, key_padding_mask=padding, need_weights=False)
        return x + out.transpose(1, 2).reshape(n, c, h, w)


class TinyUNet(nn.Module):
    """Predicts the flow velocity v = eps - x0 of a 32x32 RGB image given t and prompt tokens."""

    def __init__(self, config: TinyUNetConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels
        cond_dim = config.time_dim
        self.text = GRUTextEncoder(config) if config.text_encoder == "gru" else TextEncoder(config)
        self.time_mlp = nn.Sequential(
            nn.Linear(config.time_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )
        self.text_to_cond = nn.Linear(config.text_dim, cond_dim)
        self.stem = nn.Conv2d(config.image_channels, c1, 3, padding=1)
        self.down1 = ResBlock(c1, c1, cond_dim)
        self.pool1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        # the position codes are made for the world's image size (the rest of the network is size-agnostic)
        self.position2 = PositionCode(c2, IMAGE_SIZE // 2) if config.position_embedding else nn.Identity()
        self.position3 = PositionCode(c3, IMAGE_SIZE // 4) if config.position_embedding else nn.Identity()
        self.down2 = ResBlock(c2, c2, cond_dim)
        self.cross2 = Attention(c2, config.text_dim, config.heads)
        self.pool2 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.down3 = ResBlock(c3, c3, cond_dim)
        self.cross3 = Attention(c3, config.text_dim, config.heads)
        self.self3 = Attention(c3, None, config.heads)
        self.mid = ResBlock(c3, c3, cond_dim)
        self.mid_cross = Attention(c3, config.text_dim, config.heads)
        self.up3 = ResBlock(2 * c3, c3, cond_dim)
        self.up_cross3 = Attention(c3, config.text_dim, config.heads)
        self.unpool3 = nn.ConvTranspose2d(c3, c2, 4, stride=2, padding=1)
        self.up2 = ResBlock(2 * c2, c2, cond_dim)
        self.up_cross2 = Attention(c2, config.text_dim, config.heads)
        self.unpool2 = nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1)
        self.up1 = ResBlock(2 * c1, c1, cond_dim)
        self.out_norm = nn.GroupNorm(8, c1)
        self.out = nn.Conv2d(c1, config.image_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        text, pooled = self.text(tokens, mask)
        cond = self.time_mlp(timestep_embedding(t, self.config.time_dim)) + self.text_to_cond(pooled)
        h1 = self.down1(self.stem(x), cond)
        h2 = self.cross2(self.down2(self.position2(self.pool1(h1)), cond), text, mask)
        h3 = self.self3(self.cross3(self.down3(self.position3(self.pool2(h2)), cond), text, mask))
        h = self.mid_cross(self.mid(h3, cond), text, mask)
        h = self.up_cross3(self.up3(torch.cat([h, h3], 1), cond), text, mask)
        h = self.up_cross2(self.up2(torch.cat([self.unpool3(h), h2], 1), cond), text, mask)
        h = self.up1(torch.cat([self.unpool2(h), h1], 1), cond)
        return self.out(F.silu(self.out_norm(h)))
