"""The `flux2` and `flux2-klein` policies (docs/flux2.md): FLUX.2 [dev] and [klein] on
`nft_policies.base`; `options` imports no diffusers."""

from nft_policies.flux2.options import Flux2KleinOptions, Flux2Options

__all__ = ["Flux2KleinOptions", "Flux2Options"]
