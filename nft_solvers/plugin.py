"""The built-in solvers as a default `nft` plugin: the same table that `nft_solvers.load` uses."""

from nft_core.hookspecs import hookimpl
from nft_solvers import BUILTIN_SOLVERS


@hookimpl
def register_solvers(register):
    for name, cls in BUILTIN_SOLVERS.items():
        register(name, cls, options=cls.Options)
