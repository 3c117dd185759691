"""The `flux` policy on a tiny random FLUX pipeline built offline: what is FLUX.1's own (packing, the
distilled guidance input, schnell, errors, presets). Sampling against the stock pipeline, the policy
contract, a toy NFT run and `nft export` are checked for every family in tests/test_families.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nft_core.errors import UserError
from tests._flux_tiny import flux_options, save_tiny_flux

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


def test_the_time_shift_follows_the_image_tokens(model_dir):
    """FLUX's dynamic shift: exp(mu), mu linear in the packed tokens (64 at 32 px on the tiny VAE, between
    the tiny scheduler's 16 at mu 0.5 and 256 at mu 1.15), whatever the number of steps."""
    import math

    policy = make_policy(model_dir)
    expected = math.exp(0.5 + (1.15 - 0.5) * (64 - 16) / (256 - 16))
    assert policy.recommended_shift(4) == pytest.approx(expected) == policy.recommended_shift(40)


def test_the_distilled_guidance_is_an_input_and_schnell_has_none(model_dir, tmp_path):
    policy = make_policy(model_dir)
    x = torch.randn((2, *policy.latent_shape), generator=torch.Generator().manual_seed(0))
    t, cond = torch.tensor([0.3, 0.8]), policy.encode_prompts(PROMPTS[:2])
    with torch.no_grad():
        at_35 = policy.velocity("current", x, t, cond)
        policy.options.guidance = 1.0
        assert (policy.velocity("current", x, t, cond) - at_35).abs().max() > 1e-6
    schnell = make_policy(save_tiny_flux(tmp_path / "schnell", guidance_embeds=False))
    assert not schnell.transformer.config.guidance_embeds
    assert schnell._guidance_input(2, x.device) is None
    with torch.no_grad():
        assert schnell.velocity("old", x, t, schnell.encode_prompts(PROMPTS[:2])).shape == x.shape


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
