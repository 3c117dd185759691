"""The `nft` command line and the tools that serve its commands: sampling a checkpoint, exporting it,
reading image folders, scaffolding a plugin (`nft_core.cli.app` holds the commands)."""


def main() -> None:
    """The `nft` console script (its commands live in `nft_core.cli.app`)."""
    from nft_core.cli.app import main as run_command_line

    run_command_line()
