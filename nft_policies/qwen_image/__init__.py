"""The `qwen-image` policy (docs/qwen-image.md): Qwen-Image on `nft_policies.base`; `options` imports no
diffusers."""

from nft_policies.qwen_image.options import QwenImageOptions

__all__ = ["QwenImageOptions"]
