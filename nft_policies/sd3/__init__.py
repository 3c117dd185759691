"""The `sd3` policy (docs/sd3.md): `options` (no diffusers import), `loading`, `adapters` (LoRA), `policy`."""

from nft_policies.sd3.options import LoraOptions, SD3Options

__all__ = ["LoraOptions", "SD3Options"]
