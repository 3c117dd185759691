"""The `flux` policy: FLUX.1 [dev] and [schnell] on diffusers (`FluxPipeline` components).

Conventions (verified against `FluxPipeline` in tests/test_flux_policy.py):
- The latent of one image is the VAE's `[C, h, w]`; FLUX's transformer takes it *packed* into 2 x 2
  patches, `[(h/2)(w/2), 4C]`, with position ids per patch. The policy packs before and unpacks after
  the transformer, so every solver and objective sees the plain latent.
- Our `t in [0, 1]` is the scheduler's sigma, which is what the transformer takes as `timestep` (the
  pipeline passes `sigma * 1000 / 1000`); its output is the flow velocity `eps - x0`.
- FLUX.1-dev is guidance-distilled: the guidance scale is an *input* (a guidance embedding), not CFG.
  The policy feeds `guidance` (3.5 by default) to every call, sampling and training alike, so CFG-free
  NFT trains the model at that input. schnell has no guidance embedding.
- FLUX's schedulers shift time by `exp(mu)`, with `mu` growing with the image's token count
  (`recommended_shift`): on the grid this is SD3's shift with `shift = exp(mu)`, so `[solver] shift`
  takes it and every solver samples as the pipeline does.
"""

from __future__ import annotations

import math

import torch

from nft_core.errors import UserError
from nft_core.types import Cond
from nft_policies.base.policy import LORA_FILE, TRANSFORMER_FOLDER, FlowTransformerPolicy
from nft_policies.flux.options import FluxOptions


def pack(latents: torch.Tensor) -> torch.Tensor:
    """`[N, C, h, w]` -> FLUX's `[N, (h/2)(w/2), 4C]` (2 x 2 patches, channels fastest within a patch)."""
    n, c, h, w = latents.shape
    patches = latents.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(n, (h // 2) * (w // 2), c * 4)


def unpack(packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack` for a latent of `height x width`."""
    n, _, channels = packed.shape
    grid = packed.reshape(n, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(n, channels // 4, height, width)


def image_ids(height: int, width: int, device: torch.device) -> torch.Tensor:
    """FLUX's position ids of the packed patches: `[(h/2)(w/2), 3]` holding (0, row, column)."""
    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 1] = torch.arange(height // 2)[:, None]
    ids[..., 2] = torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3).to(device)


def time_shift(tokens: int, scheduler_config: dict) -> float:
    """`exp(mu)`, FLUX's resolution-dependent time shift for an image of `tokens` packed patches."""
    base_tokens = scheduler_config.get("base_image_seq_len", 256)
    max_tokens = scheduler_config.get("max_image_seq_len", 4096)
    base_shift = scheduler_config.get("base_shift", 0.5)
    max_shift = scheduler_config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return math.exp(base_shift + slope * (tokens - base_tokens))


class FluxPolicy(FlowTransformerPolicy):
    """FLUX.1 transformer with LoRA adapters `default` / `old` (reference = adapters off) or full copies;
    CLIP and T5 text encoders and the VAE frozen, prompt embeddings cached per prompt."""

    name = "flux"
    Options = FluxOptions

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.guidance_embeds = bool(getattr(self.transformer.config, "guidance_embeds", False))
        _, height, width = self.latent_shape
        scheduler = dict(self.pipeline.scheduler.config)
        self.recommended_shift = (
            time_shift((height // 2) * (width // 2), scheduler)
            if scheduler.get("use_dynamic_shifting")
            else 1.0
        )
        """`[solver] shift` that samples on the pipeline's time grid at this resolution."""

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
        guidance = None
        if self.guidance_embeds:
            guidance = torch.full((n,), self.options.guidance, device=x_t.device, dtype=torch.float32)
        out = network(
            hidden_states=pack(x_t),
            timestep=t,
            guidance=guidance,
            pooled_projections=cond["pooled_prompt_embeds"],
            encoder_hidden_states=embeds,
            txt_ids=torch.zeros(embeds.shape[1], 3, device=x_t.device),
            img_ids=image_ids(height, width, x_t.device),
            return_dict=False,
        )[0]
        return unpack(out, height, width)

    def _blocks(self, network: torch.nn.Module) -> list[torch.nn.Module]:
        return [*network.transformer_blocks, *network.single_transformer_blocks]


__all__ = ["LORA_FILE", "TRANSFORMER_FOLDER", "FluxPolicy", "image_ids", "pack", "time_shift", "unpack"]
