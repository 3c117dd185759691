"""The `sana` policy (docs/sana.md): SANA on `nft_policies.base`; `options` imports no diffusers."""

from nft_policies.sana.options import SanaOptions

__all__ = ["SanaOptions"]
