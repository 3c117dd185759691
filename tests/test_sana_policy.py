"""The `sana` policy on a tiny random SANA pipeline built offline: what is SANA's own (its prompt
instruction, in sampling and in CFG's empty prompt). Sampling against the stock pipeline, the policy
contract, a toy NFT run and `nft export` are checked for every family in tests/test_families.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests._sana_tiny import MAX_SEQUENCE_LENGTH, RESOLUTION, sana_options, save_tiny_sana

PROMPTS = ["a red circle", "two blue squares", "a green triangle", "one yellow star"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_sana(tmp_path_factory.mktemp("sana") / "tiny-sana")


def make_policy(model_dir: Path, **overrides):
    from nft_core import registry

    return registry.create("policies", "sana", sana_options(model_dir, **overrides), "policy")


def stock_pipeline(folder: Path):
    from diffusers import SanaPipeline

    pipeline = SanaPipeline.from_pretrained(str(folder))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_sampling_with_the_prompt_instruction_matches_the_stock_pipeline(model_dir):
    """Our Euler on the pipeline's sigmas reproduces SanaPipeline (CFG off) with SANA's prompt
    instruction on the Gemma embeddings (without it: tests/test_families.py)."""
    from nft_solvers.euler import EulerSolver

    policy = make_policy(model_dir, complex_human_instruction=True)
    pipeline = stock_pipeline(model_dir)
    noise = torch.randn((2, *policy.latent_shape), generator=torch.Generator().manual_seed(3))
    common = dict(
        prompt=PROMPTS[:2],
        latents=noise.clone(),
        num_inference_steps=4,
        guidance_scale=1.0,
        height=RESOLUTION,
        width=RESOLUTION,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        clean_caption=False,
    )
    expected = pipeline(**common, output_type="latent").images
    expected_images = pipeline(**common, output_type="pt").images
    grid = pipeline.scheduler.sigmas.double()
    cond = policy.encode_prompts(PROMPTS[:2])
    latents = EulerSolver(steps=4).sample(
        lambda x, t, c: policy.velocity("current", x, t, c), noise, grid=grid, cond=cond
    )
    torch.testing.assert_close(latents, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(policy.decode(latents), expected_images, rtol=0, atol=1e-5)


def test_cfg_uses_the_empty_prompt_without_the_instruction(model_dir):
    policy = make_policy(model_dir)
    pipeline = stock_pipeline(model_dir)
    _, _, negative, negative_mask = pipeline.encode_prompt(
        [""], do_classifier_free_guidance=True, negative_prompt="", max_sequence_length=MAX_SEQUENCE_LENGTH
    )
    null = policy.null_cond(2)
    torch.testing.assert_close(null["prompt_embeds"][0], negative[0], rtol=0, atol=0)
    torch.testing.assert_close(null["prompt_attention_mask"][1], negative_mask[0], rtol=0, atol=0)
