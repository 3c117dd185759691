"""The diffusers policies as a default `nft` plugin, registered through the same hooks as any plugin."""

from __future__ import annotations

from nft_core.hookspecs import hookimpl


def _sd3_policy(**options):
    from nft_policies.sd3.policy import SD3Policy

    return SD3Policy(**options)


@hookimpl
def register_policies(register):
    from nft_policies.sd3.options import SD3Options

    register(
        "sd3",
        _sd3_policy,
        options=SD3Options,
        description="Stable Diffusion 3 / 3.5 on diffusers: LoRA adapters default/old or full fine-tuning",
    )
