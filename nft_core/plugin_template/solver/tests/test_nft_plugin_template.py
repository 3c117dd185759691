"""The plugin's own tests: listed by `nft plugins` once installed, keeps the contract, validates options."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from nft_plugin_template import PluginTemplateSolver
from pydantic import ValidationError

from nft_core.testing import check_solver


def test_installed_plugin_is_listed_by_nft_plugins():
    env = {**os.environ, "NFT_LOAD_PLUGINS": "nft-plugin-template"}
    result = subprocess.run(
        [sys.executable, "-m", "nft_core.cli", "plugins"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    entry = next((p for p in listing["plugins"] if p["name"] == "nft-plugin-template"), None)
    assert entry is not None, f"nft-plugin-template is not installed: pip install -e . ({listing['errors']})"
    assert entry["distribution"] == "nft-plugin-template" and entry["version"]
    assert entry["registers"] == {"solvers": ["plugin-template"]}
    assert entry["hooks"] == ["register_solvers"]


@pytest.mark.parametrize("options", [{"steps": 6}, {"steps": 8, "shift": 3.0}])
def test_keeps_the_solver_contract(options):
    check_solver(PluginTemplateSolver(**options))


def test_unknown_option_is_refused():
    with pytest.raises(ValidationError, match="bogus"):
        PluginTemplateSolver(bogus=1)
