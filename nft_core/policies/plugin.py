"""The diffusers policies, the GenEval prompt source and `nft sample`, registered like a plugin."""

from __future__ import annotations

from nft_core.hookspecs import hookimpl


def _sd3_policy(**options):
    from nft_core.policies.sd3.policy import SD3Policy

    return SD3Policy(**options)


def _geneval_prompts(arg: str):
    from nft_core.policies.geneval_prompts import geneval_prompts

    return geneval_prompts(arg)


@hookimpl
def register_policies(register):
    from nft_core.policies.sd3.options import SD3Options

    register(
        "sd3",
        _sd3_policy,
        options=SD3Options,
        description="Stable Diffusion 3 / 3.5 on diffusers: LoRA adapters default/old or full fine-tuning",
    )


@hookimpl
def register_prompt_sources(register):
    register(
        "geneval",
        _geneval_prompts,
        description="GenEval-format training prompts: geneval:train[-N][,exclude=FILE][,seed=S]",
    )


@hookimpl
def register_commands(app):
    from nft_core.policies.sample import add_sample_command

    add_sample_command(app)
