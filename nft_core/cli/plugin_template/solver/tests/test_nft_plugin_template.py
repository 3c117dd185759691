"""The plugin's own tests: listed by `nft plugins` once installed, keeps the contract, validates options."""

from __future__ import annotations

import pytest
from nft_plugin_template import PluginTemplateSolver
from pydantic import ValidationError

from nft_core.testing import check_listed, check_solver


def test_installed_plugin_is_listed_by_nft_plugins():
    entry = check_listed("nft-plugin-template", {"solvers": ["plugin-template"]})
    assert entry["hooks"] == ["register_solvers"]


@pytest.mark.parametrize("options", [{"steps": 6}, {"steps": 8, "shift": 3.0}])
def test_keeps_the_solver_contract(options):
    check_solver(PluginTemplateSolver(**options))


def test_unknown_option_is_refused():
    with pytest.raises(ValidationError, match="bogus"):
        PluginTemplateSolver(bogus=1)
