"""The diffusers policies as a default `nft` plugin, registered through the same hooks as any plugin."""

from __future__ import annotations

from nft_core.hookspecs import hookimpl


def _sd3_policy(**options):
    from nft_policies.sd3.policy import SD3Policy

    return SD3Policy(**options)


def _flux_policy(**options):
    from nft_policies.flux.policy import FluxPolicy

    return FluxPolicy(**options)


def _sana_policy(**options):
    from nft_policies.sana.policy import SanaPolicy

    return SanaPolicy(**options)


@hookimpl
def register_policies(register):
    from nft_policies.flux.options import FluxOptions
    from nft_policies.sana.options import SanaOptions
    from nft_policies.sd3.options import SD3Options

    register(
        "sd3",
        _sd3_policy,
        options=SD3Options,
        description="Stable Diffusion 3 / 3.5 on diffusers: LoRA adapters default/old or full fine-tuning",
    )
    register(
        "flux",
        _flux_policy,
        options=FluxOptions,
        description="FLUX.1 [dev] / [schnell] on diffusers: packed latents, distilled guidance as an input",
    )
    register(
        "sana",
        _sana_policy,
        options=SanaOptions,
        description="SANA on diffusers: linear-attention DiT, Gemma-2 text encoder, DC-AE latents",
    )
