"""The `sana` policy on a tiny random SANA pipeline built offline: the stock pipeline's denoising and
decoding reproduced, the policy contract in both modes, a short NFT run that improves a toy reward,
and the exported LoRA (diffusers format) and merged pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nft_core.testing import check_policy
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


@pytest.mark.parametrize("instruction", [False, True])
def test_sampling_and_decoding_match_the_stock_pipeline(model_dir, instruction):
    """Our Euler on the pipeline's sigmas reproduces SanaPipeline (CFG off): t -> t * 1000 * scale,
    v = eps - x0, the Gemma embeddings with (or without) SANA's prompt instruction."""
    from nft_solvers.euler import EulerSolver

    policy = make_policy(model_dir, complex_human_instruction=instruction)
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
    if not instruction:
        common["complex_human_instruction"] = None
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


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_sana_keeps_the_policy_contract(model_dir, tmp_path, mode):
    overrides = {} if mode == "lora" else {"lora": False}
    check_policy(make_policy(model_dir, **overrides), tmp_path / mode)


RUN_CONFIG = """
name = "sana-run"
[policy]
name = "sana"
model = "{model}"
resolution = {resolution}
max_sequence_length = {tokens}
complex_human_instruction = false
[policy.lora]
rank = 4
alpha = 8.0
[solver]
name = "euler"
steps = 3
[objective]
kl_weight = 0.0
ema_decay = 0.5
[data]
prompts = "{prompts}"
prompts_per_epoch = 2
images_per_prompt = 4
[train]
epochs = 6
batch_size = 8
lr = 1e-2
optimizer_steps_per_epoch = 1
precision = "fp32"
threads = 2
[eval]
prompts = "{prompts}"
images_per_prompt = 2
[eval.solver]
name = "euler"
steps = 3
[log]
grid_every = 0
progress = false
[[reward]]
name = "brightness"
normalize = "group-zscore"
"""


@pytest.fixture(scope="module")
def sana_run(model_dir, tmp_path_factory, brightness_reward):
    from nft_core.config import load_config
    from nft_core.loop.trainer import Trainer

    tmp = tmp_path_factory.mktemp("sana-run")
    prompts = tmp / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n")
    config = tmp / "run.toml"
    config.write_text(
        RUN_CONFIG.format(model=model_dir, resolution=RESOLUTION, tokens=MAX_SEQUENCE_LENGTH, prompts=prompts)
    )
    trainer = Trainer(load_config(config), tmp / "run", echo=lambda *_: None)
    return trainer, trainer.run()


def test_a_short_nft_run_moves_the_lora_and_improves_the_toy_reward(sana_run):
    trainer, summary = sana_run
    assert summary["status"] == "finished" and summary["optimizer_steps"] == 6
    before = summary["eval_before"]["brightness"]["score"]
    after = summary["eval_after"]["brightness"]["score"]
    assert after > before, (before, after)


def test_the_exported_lora_loads_into_the_stock_pipeline_and_the_merged_export_equals_it(
    sana_run, model_dir, tmp_path
):
    from diffusers import SanaPipeline

    from tests._export_check import check_export

    call = dict(
        prompt=PROMPTS[:1],
        num_inference_steps=2,
        guidance_scale=1.0,
        height=RESOLUTION,
        width=RESOLUTION,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        complex_human_instruction=None,
    )
    check_export(sana_run[0].run_dir, model_dir, SanaPipeline, call, tmp_path)
