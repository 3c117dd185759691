"""The `flux2` and `flux2-klein` policies: FLUX.2 [dev] (`Flux2Pipeline`, a Mistral-Small-3.1 text
encoder, guidance-distilled) and [klein] (`Flux2KleinPipeline`, a Qwen-3 text encoder, no guidance input).

Conventions (verified against both pipelines in tests/test_families.py):
- The latent of one image is what the pipelines draw their noise in: the VAE's latent patchified into
  2 x 2 patches and normalised by the VAE's batch-norm statistics, `[4C, h/2, w/2]`. The transformer
  takes its pixels as tokens (`pack` with 1 x 1 patches) with 4-axis position ids; `_decode_latents`
  undoes the normalisation and the patches before the VAE.
- Our `t` is the scheduler's sigma, the transformer's timestep; its output is the flow velocity
  `eps - x0`. [dev]'s `guidance` is an input (as FLUX.1-dev's); [klein] has none (its base models use
  CFG, which NFT does not; its distilled ones sample in 4 steps, docs/flux2.md).
- The text is the encoder's hidden states of `text_layers`, concatenated per token, padded to
  `max_sequence_length` (no mask, as the pipelines).
- The schedulers' time shift comes from FLUX.2's empirical `mu`, which grows with the image's tokens and
  falls with the number of steps: `recommended_shift(steps)` gives the `[solver] shift` of each grid.
"""

from __future__ import annotations

import torch

from nft_core.errors import UserError
from nft_core.types import Cond
from nft_policies.base.layout import grid_ids, pack, unpack
from nft_policies.base.policy import LORA_FILE, TRANSFORMER_FOLDER, FlowTransformerPolicy
from nft_policies.flux2.options import Flux2KleinOptions, Flux2Options


def empirical_mu(tokens: int, steps: int) -> float:
    """FLUX.2's time-shift `mu` for `tokens` image tokens sampled in `steps` steps (its reference code's
    fit, as `diffusers.pipelines.flux2.pipeline_flux2.compute_empirical_mu`)."""
    slope_200, intercept_200 = 0.00016927, 0.45666666
    mu_200 = slope_200 * tokens + intercept_200
    if tokens > 4300:
        return mu_200
    mu_10 = 8.73809524e-05 * tokens + 1.89833333
    slope = (mu_200 - mu_10) / 190.0
    return slope * steps + mu_200 - 200.0 * slope


class Flux2Policy(FlowTransformerPolicy):
    """FLUX.2 transformer with LoRA adapters `default` / `old` (reference = adapters off) or full copies;
    the text encoder and the VAE frozen, prompt embeddings cached per prompt."""

    name = "flux2"
    Options: type[Flux2Options] = Flux2Options
    block_lists = ("transformer_blocks", "single_transformer_blocks")

    def _latent_shape(self, resolution: int) -> tuple[int, int, int]:
        multiple = self._vae_scale() * 2
        if resolution % multiple:
            raise UserError(
                f"policy.resolution: {resolution} is not a multiple of {multiple} "
                f"(VAE downscale {self._vae_scale()} x FLUX.2's 2 x 2 patches)"
            )
        side = resolution // multiple
        return (self.transformer.config.in_channels, side, side)

    def _image_tokens(self) -> int:
        _, height, width = self.latent_shape
        return height * width

    def _shift_mu(self, steps: int) -> float:
        return empirical_mu(self._image_tokens(), steps)

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        layers = self.options.text_layers
        embeds, _ = self.pipeline.encode_prompt(
            prompt=prompts,
            device=self.device,
            max_sequence_length=self.options.max_sequence_length,
            **({"text_encoder_out_layers": tuple(layers)} if layers else {}),
        )
        return {"prompt_embeds": embeds.cpu()}

    def _forward(
        self, network: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Cond
    ) -> torch.Tensor:
        n, _, height, width = x_t.shape
        embeds = cond["prompt_embeds"]
        text_ids = torch.zeros(embeds.shape[1], 4, device=x_t.device)
        text_ids[:, 3] = torch.arange(embeds.shape[1], device=x_t.device)
        out = network(
            hidden_states=pack(x_t, patch=1),
            timestep=t,
            guidance=self._guidance_input(n, x_t.device),
            encoder_hidden_states=embeds,
            txt_ids=text_ids,
            img_ids=grid_ids(height, width, 4, x_t.device),
            return_dict=False,
        )[0]
        return unpack(out, height, width, patch=1)

    def _decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipeline.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latents.dtype)
        _, _, height, width = latents.shape
        patches = pack(latents * std + mean, patch=1)  # each token: one 2 x 2 patch of the VAE latent
        return vae.decode(unpack(patches, 2 * height, 2 * width), return_dict=False)[0]


class Flux2KleinPolicy(Flux2Policy):
    """FLUX.2 [klein]: the `flux2` policy on `Flux2KleinPipeline` (Qwen-3 text encoder, no guidance input)."""

    name = "flux2-klein"
    Options = Flux2KleinOptions


__all__ = ["LORA_FILE", "TRANSFORMER_FOLDER", "Flux2KleinPolicy", "Flux2Policy", "empirical_mu"]
