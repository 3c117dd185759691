"""The `flux` policy: FLUX.1 [dev] and [schnell] on diffusers (`FluxPipeline` components).

Conventions (verified against `FluxPipeline` in tests/test_families.py):
- The latent of one image is the VAE's `[C, h, w]`; FLUX's transformer takes it *packed* into 2 x 2
  patches, `[(h/2)(w/2), 4C]`, with position ids per patch. The policy packs before and unpacks after
  the transformer, so every solver and objective sees the plain latent.
- Our `t in [0, 1]` is the scheduler's sigma, which is what the transformer takes as `timestep` (the
  pipeline passes `sigma * 1000 / 1000`); its output is the flow velocity `eps - x0`.
- FLUX.1-dev is guidance-distilled: the guidance scale is an *input* (a guidance embedding), not CFG.
  The policy feeds `guidance` (3.5 by default) to every call, sampling and training alike, so CFG-free
  NFT trains the model at that input. schnell has no guidance embedding.
- FLUX's schedulers shift time by `exp(mu)`, with `mu` growing with the image's token count
  (`recommended_shift()`): on the grid this is SD3's shift with `shift = exp(mu)`, so `[solver] shift`
  takes it and every solver samples as the pipeline does.
"""

from __future__ import annotations

import torch

from nft_core.errors import UserError
from nft_core.types import Cond
from nft_policies.base.layout import grid_ids, pack, unpack
from nft_policies.base.policy import LORA_FILE, TRANSFORMER_FOLDER, FlowTransformerPolicy
from nft_policies.flux.options import FluxOptions


def image_ids(height: int, width: int, device: torch.device) -> torch.Tensor:
    """FLUX's position ids of the packed patches: `[(h/2)(w/2), 3]` holding (0, row, column)."""
    return grid_ids(height // 2, width // 2, 3, device)


class FluxPolicy(FlowTransformerPolicy):
    """FLUX.1 transformer with LoRA adapters `default` / `old` (reference = adapters off) or full copies;
    CLIP and T5 text encoders and the VAE frozen, prompt embeddings cached per prompt."""

    name = "flux"
    Options = FluxOptions
    block_lists = ("transformer_blocks", "single_transformer_blocks")

    def _latent_shape(self, resolution: int) -> tuple[int, int, int]:
        multiple = self._vae_scale() * 2
        if resolution % multiple:
            raise UserError(
                f"policy.resolution: {resolution} is not a multiple of {multiple} "
                f"(VAE downscale {self._vae_scale()} x FLUX's 2 x 2 packing)"
            )
        side = resolution // self._vae_scale()
        return (self.transformer.config.in_channels // 4, side, side)

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            device=self.device,
            max_sequence_length=self.options.max_sequence_length,
        )
        return {"prompt_embeds": embeds.cpu(), "pooled_prompt_embeds": pooled.cpu()}

    def _forward(
        self, network: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Cond
    ) -> torch.Tensor:
        n, _, height, width = x_t.shape
        embeds = cond["prompt_embeds"]
        out = network(
            hidden_states=pack(x_t),
            timestep=t,
            guidance=self._guidance_input(n, x_t.device),
            pooled_projections=cond["pooled_prompt_embeds"],
            encoder_hidden_states=embeds,
            txt_ids=torch.zeros(embeds.shape[1], 3, device=x_t.device),
            img_ids=image_ids(height, width, x_t.device),
            return_dict=False,
        )[0]
        return unpack(out, height, width)


__all__ = ["LORA_FILE", "TRANSFORMER_FOLDER", "FluxPolicy", "image_ids", "pack", "unpack"]
