"""The `wan` policy (docs/video.md): Wan 2.1 text-to-video on `nft_policies.base`; `options` imports no
diffusers."""

from nft_policies.wan.options import WanOptions

__all__ = ["WanOptions"]
