"""The built-in rewards, the GenEval prompt source and `nft weights` as a default `nft` plugin."""

from nft_core.hookspecs import hookimpl
from nft_rewards import BUILTIN_REWARDS, reward_class


@hookimpl
def register_rewards(register):
    for name in BUILTIN_REWARDS:
        cls = reward_class(name)
        description = (cls.__doc__ or "").strip().split("\n")[0]
        register(name, cls.from_options, options=cls.Options, description=description)


def _geneval_prompts(arg: str):
    from nft_rewards.geneval.prompts import geneval_prompts

    return geneval_prompts(arg)


@hookimpl
def register_prompt_sources(register):
    register(
        "geneval",
        _geneval_prompts,
        description="GenEval-format training prompts: geneval:train[-N][,exclude=FILE][,seed=S]",
    )


@hookimpl
def register_commands(app):
    from nft_rewards.cli import add_commands

    add_commands(app)
