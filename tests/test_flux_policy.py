"""The `flux` policy on a tiny random FLUX pipeline built offline: the stock pipeline's denoising and
decoding reproduced (packed latents, distilled guidance, time shift), the policy contract in both
modes, a short NFT run that improves a toy reward, and `nft export` (LoRA and merged)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nft_core.errors import UserError
from nft_core.testing import check_policy
from tests._flux_tiny import MAX_SEQUENCE_LENGTH, RESOLUTION, flux_options, save_tiny_flux

PROMPTS = ["a red circle", "two blue squares", "a green triangle", "one yellow star"]
runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_flux(tmp_path_factory.mktemp("flux") / "tiny-flux")


def make_policy(model_dir: Path, **overrides):
    from nft_core import registry

    return registry.create("policies", "flux", flux_options(model_dir, **overrides), "policy")


def stock_pipeline(folder: Path):
    from diffusers import FluxPipeline

    pipeline = FluxPipeline.from_pretrained(str(folder))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_packing_round_trips_and_matches_the_pipeline():
    from diffusers import FluxPipeline

    from nft_policies.flux.policy import image_ids, pack, unpack

    latents = torch.randn(2, 4, 16, 16)
    packed = pack(latents)
    torch.testing.assert_close(packed, FluxPipeline._pack_latents(latents, 2, 4, 16, 16), rtol=0, atol=0)
    torch.testing.assert_close(unpack(packed, 16, 16), latents, rtol=0, atol=0)
    expected = FluxPipeline._prepare_latent_image_ids(2, 8, 8, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(image_ids(16, 16, torch.device("cpu")), expected, rtol=0, atol=0)


@pytest.mark.parametrize("guidance", [3.5, 1.0])
def test_sampling_and_decoding_match_the_stock_pipeline(model_dir, guidance):
    """Our Euler on the grid of `recommended_shift` reproduces FluxPipeline: t is sigma, v = eps - x0,
    packing inside the policy, the distilled guidance an input."""
    from nft_policies.flux.policy import pack, unpack
    from nft_solvers.euler import EulerSolver

    policy = make_policy(model_dir, guidance=guidance)
    pipeline = stock_pipeline(model_dir)
    noise = torch.randn((2, *policy.latent_shape), generator=torch.Generator().manual_seed(3))
    common = dict(
        prompt=PROMPTS[:2],
        latents=pack(noise),
        num_inference_steps=4,
        guidance_scale=guidance,
        height=RESOLUTION,
        width=RESOLUTION,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
    )
    _, height, width = policy.latent_shape
    expected = unpack(pipeline(**common, output_type="latent").images, height, width)
    expected_images = pipeline(**common, output_type="pt").images
    solver = EulerSolver(steps=4, shift=policy.recommended_shift)
    torch.testing.assert_close(
        solver.default_grid().float(), pipeline.scheduler.sigmas.float(), atol=1e-6, rtol=0
    )
    cond = policy.encode_prompts(PROMPTS[:2])
    latents = solver.sample(lambda x, t, c: policy.velocity("current", x, t, c), noise, cond=cond)
    torch.testing.assert_close(latents, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(policy.decode(latents), expected_images, rtol=0, atol=1e-5)


def test_the_distilled_guidance_is_an_input_and_schnell_has_none(model_dir, tmp_path):
    policy = make_policy(model_dir)
    x = torch.randn((2, *policy.latent_shape), generator=torch.Generator().manual_seed(0))
    t, cond = torch.tensor([0.3, 0.8]), policy.encode_prompts(PROMPTS[:2])
    with torch.no_grad():
        at_35 = policy.velocity("current", x, t, cond)
        policy.options.guidance = 1.0
        assert (policy.velocity("current", x, t, cond) - at_35).abs().max() > 1e-6
    schnell = make_policy(save_tiny_flux(tmp_path / "schnell", guidance_embeds=False))
    assert not schnell.guidance_embeds
    with torch.no_grad():
        assert schnell.velocity("old", x, t, schnell.encode_prompts(PROMPTS[:2])).shape == x.shape


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_flux_keeps_the_policy_contract(model_dir, tmp_path, mode):
    overrides = {} if mode == "lora" else {"lora": False}
    check_policy(make_policy(model_dir, **overrides), tmp_path / mode)


def test_a_missing_checkpoint_says_what_to_download(tmp_path, monkeypatch):
    from nft_policies.base.loading import resolve_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("NFT_WEIGHTS_DIR", raising=False)
    with pytest.raises(UserError) as error:
        resolve_folder("black-forest-labs/FLUX.1-dev")
    assert "hf download black-forest-labs/FLUX.1-dev" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError, match="not a multiple of 4"):
        make_policy(save_tiny_flux(tmp_path / "m"), resolution=30)


RUN_CONFIG = """
name = "flux-run"
[policy]
name = "flux"
model = "{model}"
resolution = {resolution}
max_sequence_length = {tokens}
{lora}
[solver]
name = "euler"
steps = 3
shift = {shift}
[objective]
kl_weight = 0.0
ema_decay = 0.5
[data]
prompts = "{prompts}"
prompts_per_epoch = 2
images_per_prompt = 4
[train]
epochs = {epochs}
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
shift = {shift}
[log]
grid_every = 0
progress = false
[[reward]]
name = "brightness"
normalize = "group-zscore"
"""


@pytest.fixture(scope="module")
def flux_run(model_dir, tmp_path_factory, brightness_reward):
    """A short NFT run of a LoRA on the tiny FLUX model, trained to make its images brighter."""
    from nft_core.config import load_config
    from nft_core.loop.trainer import Trainer

    tmp = tmp_path_factory.mktemp("flux-run")
    prompts = tmp / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n")
    shift = make_policy(model_dir).recommended_shift
    config = tmp / "run.toml"
    config.write_text(
        RUN_CONFIG.format(
            model=model_dir,
            resolution=RESOLUTION,
            tokens=MAX_SEQUENCE_LENGTH,
            prompts=prompts,
            epochs=6,
            shift=shift,
            lora="[policy.lora]\nrank = 4\nalpha = 8.0",
        )
    )
    trainer = Trainer(load_config(config), tmp / "run", echo=lambda *_: None)
    return trainer, trainer.run()


def test_a_short_nft_run_moves_the_lora_and_improves_the_toy_reward(flux_run):
    trainer, summary = flux_run
    assert summary["status"] == "finished" and summary["optimizer_steps"] == 6
    moved = max(
        float(p.detach().abs().max()) for n, p in trainer.policy.trainable_parameters() if "lora_B" in n
    )
    assert moved > 0
    before = summary["eval_before"]["brightness"]["score"]
    after = summary["eval_after"]["brightness"]["score"]
    assert after > before, (before, after)  # paired evaluation: same prompts and noise


def test_the_exported_lora_loads_into_the_stock_pipeline_and_the_merged_export_equals_it(
    flux_run, model_dir, tmp_path
):
    from diffusers import FluxPipeline

    from tests._export_check import check_export

    call = dict(
        prompt=PROMPTS[:1],
        num_inference_steps=2,
        guidance_scale=3.5,
        height=RESOLUTION,
        width=RESOLUTION,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
    )
    check_export(flux_run[0].run_dir, model_dir, FluxPipeline, call, tmp_path)
    index = json.loads((tmp_path / "merged" / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"


FLUX_PRESETS = sorted((Path(__file__).resolve().parents[1] / "examples").glob("flux1-dev-*.toml"))


@pytest.mark.parametrize("preset", FLUX_PRESETS, ids=[p.stem for p in FLUX_PRESETS])
def test_flux_presets_validate_without_weights_and_name_their_prompt_files(preset, monkeypatch, tmp_path):
    from nft_core.cli.app import build_app
    from nft_policies.base import loading

    def forbidden(*args, **kwargs):
        raise AssertionError("validation must not load weights")

    monkeypatch.setattr(loading, "load_pipeline", forbidden)
    monkeypatch.setattr(loading, "resolve_folder", forbidden)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(build_app(), ["validate", "--portable", str(preset)])
    assert result.exit_code == 0, result.output
    assert "policy flux" in result.output
    # here, on a CPU, from a folder without the prompt files: one line saying where to get them
    monkeypatch.chdir(tmp_path)
    here = runner.invoke(build_app(), ["validate", str(preset), "--set", 'train.device="cpu"'])
    assert here.exit_code == 2 and "not found" in here.output and "; download " in here.output
    assert len(here.output.strip().splitlines()) == 1


def test_there_are_flux_presets_for_geneval_and_pickscore():
    assert {p.stem for p in FLUX_PRESETS} == {"flux1-dev-geneval", "flux1-dev-pickscore"}
