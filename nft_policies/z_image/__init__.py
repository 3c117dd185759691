"""The `z-image` policy (docs/z-image.md): Z-Image and Z-Image-Turbo on `nft_policies.base`; `options`
imports no diffusers."""

from nft_policies.z_image.options import ZImageOptions

__all__ = ["ZImageOptions"]
