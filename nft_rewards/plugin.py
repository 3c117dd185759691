"""The built-in rewards and reward commands as a default `nft` plugin (the table `nft_rewards.load` uses)."""

from nft_core.hookspecs import hookimpl
from nft_rewards import BUILTIN_REWARDS, reward_class


@hookimpl
def register_rewards(register):
    for name in BUILTIN_REWARDS:
        cls = reward_class(name)
        description = (cls.__doc__ or "").strip().split("\n")[0]
        register(name, cls.from_options, options=cls.Options, description=description)


@hookimpl
def register_commands(app):
    from nft_rewards.cli import add_commands

    add_commands(app)
