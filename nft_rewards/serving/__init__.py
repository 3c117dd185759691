"""Serving a reward over HTTP, so heavy rewards run in their own environment (docs/serving.md).

    nft reward serve geneval --set detector=mmdet --port 8765         # or:
    python -m nft_rewards.serving geneval --set detector=mmdet --port 8765

The wire format is `nft_rewards.serving.wire` (safetensors bodies, JSON headers, no pickle); the client is the
`remote` reward (`nft_rewards.remote`). Needs the `serve` extra (starlette, uvicorn).
"""

from __future__ import annotations

from nft_rewards.serving.server import TOKEN_ENV, bind, check_bind, is_loopback, serve
from nft_rewards.serving.settings import Guards

__all__ = ["TOKEN_ENV", "Guards", "bind", "check_bind", "is_loopback", "serve"]
