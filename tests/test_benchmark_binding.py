"""The word-order probe of `benchmarks/shapes_binding.py`: swapped prompts; no gap for a bag of words."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from nft_shapes.grammar import all_prompts, metadata_for
from nft_shapes.model import TinyUNet, TinyUNetConfig
from nft_shapes.policy import MAX_TOKENS, TOKENS

_SPEC = importlib.util.spec_from_file_location(
    "shapes_binding", Path(__file__).resolve().parents[1] / "benchmarks" / "shapes_binding.py"
)
binding = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(binding)


def test_swapped_prompt_exchanges_the_two_roles():
    two_role = [item for item in all_prompts() if item.metadata["tag"] in ("position", "color_attr")]
    for item in two_role:
        swapped = metadata_for(binding.swapped_prompt(item.metadata))  # a grammar prompt itself
        first, second = item.metadata["include"]
        if item.metadata["tag"] == "position":
            assert [c["class"] for c in swapped["include"]] == [second["class"], first["class"]]
            assert swapped["include"][1]["position"] == second["position"]
        else:
            assert [c["class"] for c in swapped["include"]] == [first["class"], second["class"]]
            assert [c["color"] for c in swapped["include"]] == [second["color"], first["color"]]
        assert sorted(swapped["prompt"].split()) == sorted(item.prompt.split())
    with pytest.raises(ValueError, match="only position and color_attr"):
        binding.swapped_prompt(metadata_for("a circle and a square"))


def _tiny(text_encoder: str) -> TinyUNet:
    torch.manual_seed(0)
    config = TinyUNetConfig(
        vocab_size=len(TOKENS),
        max_tokens=MAX_TOKENS,
        channels=(8, 16, 16),
        text_dim=16,
        time_dim=16,
        text_encoder=text_encoder,
        token_init_std=1.0,
    )
    model = TinyUNet(config).eval()
    for attention in (model.cross2, model.cross3, model.mid_cross, model.up_cross3, model.up_cross2):
        torch.nn.init.normal_(attention.attn.out_proj.weight, std=0.5)  # zero at init: let the text through
    torch.nn.init.normal_(model.out.weight, std=0.5)  # and the output layer, also zero at init
    return model


def test_probe_sees_no_gap_for_a_bag_of_words_and_a_gap_for_an_ordered_encoder():
    bag = _tiny("transformer")
    with torch.no_grad():
        bag.text.positions.zero_()  # no positions: every layer is blind to word order
    for tag in ("position", "color_attr"):
        for row in binding.loss_gap(bag, tag, images=8, seed=0)["by_t"]:
            assert abs(row["gap"]) < 1e-5, row
    ordered = binding.loss_gap(_tiny("gru"), "color_attr", images=8, seed=0)["by_t"]
    assert max(abs(row["gap"]) for row in ordered) > 1e-3
