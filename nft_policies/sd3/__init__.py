"""The `sd3` policy (docs/sd3.md): `options` (no diffusers import) and `policy`, on `nft_policies.base`."""

from nft_policies.sd3.options import LoraOptions, SD3Options

__all__ = ["LoraOptions", "SD3Options"]
