"""Hook specifications of the `nft` plugin project. Each hook receives a `register` callback."""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("nft")
hookimpl = HookimplMarker("nft")


@hookspec
def register_rewards(register):
    """Register rewards: `register(name, factory, options=OptionsModel, description=...)`."""


@hookspec
def register_solvers(register):
    """Register solvers: `register(name, factory, options=OptionsModel)`; `factory(**options)` -> Solver."""


@hookspec
def register_policies(register):
    """Register policies: `register(name, factory, options=OptionsModel)`."""


@hookspec
def register_objectives(register):
    """Register training objectives: `register(name, factory, options=OptionsModel)`."""


@hookspec
def register_monitors(register):
    """Register monitors: `register(name, factory, options=OptionsModel)`; `factory(**options)` -> Monitor."""


@hookspec
def register_trackers(register):
    """Register experiment trackers: `register(name, factory, options=OptionsModel, description=...)`;
    `factory(**options)` -> Tracker (`[log] trackers` names them; docs/trackers.md)."""


@hookspec
def register_loggers(register):
    """Deprecated name of `register_trackers` (still honoured, with a warning)."""


@hookspec
def register_levers(register):
    """Register rollout levers: `register(name, factory, options=OptionsModel, description=...)`;
    `factory(**options)` -> Lever (`[rollout] levers` names them; docs/rollout.md)."""


@hookspec
def register_prompt_sources(register):
    """Register prompt sources: `register(name, factory)`; `factory(arg) -> list[PromptItem]`."""


@hookspec
def register_commands(app):
    """Add Typer commands to the `nft` command-line app."""
