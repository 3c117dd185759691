"""The `sd3` policy: Stable Diffusion 3 / 3.5 on diffusers, sampled and trained in latent space.

Conventions (verified against `StableDiffusion3Pipeline` in tests/test_families.py): our `t in [0, 1]`
is the scheduler's sigma, the transformer's `timestep` is `t * num_train_timesteps` (1000), and its output
is the flow velocity `eps - x0` of `x_t = (1 - t) x0 + t eps`, the same `v` the objective uses. What every
flow-transformer policy shares is in `nft_policies.base.policy`.
"""

from __future__ import annotations

import torch

from nft_core.errors import UserError
from nft_core.types import Cond
from nft_policies.base.policy import LORA_FILE, TRANSFORMER_FOLDER, FlowTransformerPolicy
from nft_policies.sd3.options import SD3Options


class SD3Policy(FlowTransformerPolicy):
    """SD3 transformer with LoRA adapters `default` / `old` (reference = adapters off) or full copies.

    Text encoders and VAE are frozen; prompt embeddings (`prompt_embeds [N, L, D]`, `pooled_prompt_embeds
    [N, P]`) are computed once per prompt and cached on the CPU; images are decoded through the VAE.
    """

    name = "sd3"
    Options = SD3Options

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.num_train_timesteps = float(self.pipeline.scheduler.config.num_train_timesteps)

    def _latent_shape(self, resolution: int) -> tuple[int, int, int]:
        vae_scale = self._vae_scale()
        config = self.transformer.config
        multiple = vae_scale * config.patch_size
        if resolution % multiple:
            raise UserError(
                f"policy.resolution: {resolution} is not a multiple of {multiple} "
                f"(VAE downscale {vae_scale} x patch size {config.patch_size})"
            )
        side = resolution // vae_scale
        limit = getattr(config, "pos_embed_max_size", None)
        if limit and side // config.patch_size > limit:
            raise UserError(
                f"policy.resolution: {resolution} exceeds this model's maximum "
                f"{limit * config.patch_size * vae_scale} px"
            )
        return (config.in_channels, side, side)

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.options.max_sequence_length,
        )
        return {"prompt_embeds": embeds.cpu(), "pooled_prompt_embeds": pooled.cpu()}

    def _forward(
        self, network: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Cond
    ) -> torch.Tensor:
        return network(
            hidden_states=x_t,
            timestep=t * self.num_train_timesteps,
            encoder_hidden_states=cond["prompt_embeds"],
            pooled_projections=cond["pooled_prompt_embeds"],
            return_dict=False,
        )[0]


__all__ = ["LORA_FILE", "TRANSFORMER_FOLDER", "SD3Policy"]
