"""The plugin's own tests: listed by `nft plugins` once installed, keeps the contract, validates options."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from nft_plugin_template import PluginTemplateReward

from nft_core.errors import UserError
from nft_core.testing import check_reward


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
    assert entry["registers"] == {"rewards": ["plugin-template"]}
    assert entry["hooks"] == ["register_rewards"]


def test_keeps_the_reward_contract():
    check_reward(PluginTemplateReward.from_options(batch_size=3))


def test_grey_scores_zero_and_colour_scores_more():
    grey = torch.full((1, 3, 16, 16), 0.5)
    stripes = torch.zeros(1, 3, 16, 16)
    stripes[0, 0, :, ::2] = 1.0  # red and black columns
    scores = PluginTemplateReward()(torch.cat([grey, stripes]), ["grey", "stripes"]).scores
    assert scores[0] == 0.0 and scores[1] > 0.5


def test_unknown_option_is_a_one_line_error():
    with pytest.raises(UserError, match="bogus: unknown key; allowed: batch_size, mean_weight"):
        PluginTemplateReward.from_options(bogus=1)
