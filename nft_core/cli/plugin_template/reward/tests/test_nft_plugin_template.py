"""The plugin's own tests: listed by `nft plugins` once installed, keeps the contract, validates options."""

from __future__ import annotations

import pytest
import torch
from nft_plugin_template import PluginTemplateReward

from nft_core.errors import UserError
from nft_core.testing import check_listed, check_reward


def test_installed_plugin_is_listed_by_nft_plugins():
    entry = check_listed("nft-plugin-template", {"rewards": ["plugin-template"]})
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
