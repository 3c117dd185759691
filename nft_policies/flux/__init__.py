"""The `flux` policy (docs/flux.md): FLUX.1 [dev] / [schnell] on `nft_policies.base`; `options` imports
no diffusers."""

from nft_policies.flux.options import FluxOptions

__all__ = ["FluxOptions"]
