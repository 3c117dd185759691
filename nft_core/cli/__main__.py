"""`python -m nft_core.cli ...`: the `nft` command line without its console script."""

from nft_core.cli import main

main()
