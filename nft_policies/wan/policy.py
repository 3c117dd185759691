"""The `wan` policy: Wan 2.1 text-to-video (`WanPipeline`, a UMT5 text encoder, a 3D causal video VAE).

Conventions (verified against `WanPipeline` in tests/test_families.py):
- The latent of one video is the VAE's `[C, F', h, w]`: `F' = (frames - 1) / t + 1` latent frames for a
  temporal downscale `t` (4), normalised by the VAE's per-channel mean and std, which `_decode_latents`
  undoes; the transformer patchifies it itself (1 x 2 x 2). Decoded videos are frames `[N, F, 3, H, W]`.
- Our `t` is the scheduler's sigma; the transformer takes `1000 t` (per token for Wan 2.2's
  `expand_timesteps`); its output is the flow velocity `eps - x0`. The text is UMT5's last hidden states,
  zero-padded to `max_sequence_length` (no mask), as the pipeline.
- Wan's hub repos sample with UniPC; `recommended_shift` gives its `flow_shift` for our solvers' grid.
  Wan 2.2 A14B's two experts (`transformer_2`) are not supported.
"""

from __future__ import annotations

from typing import Any

import torch

from nft_core.errors import UserError
from nft_core.types import Cond
from nft_policies.base.policy import LORA_FILE, TRANSFORMER_FOLDER, FlowTransformerPolicy
from nft_policies.wan.options import WanOptions


class WanPolicy(FlowTransformerPolicy):
    """Wan transformer with LoRA adapters `default` / `old` (reference = adapters off) or full copies; the
    UMT5 encoder and the VAE frozen, prompt embeddings cached per prompt."""

    name = "wan"
    Options = WanOptions
    block_lists = ("blocks",)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if getattr(self.pipeline, "transformer_2", None) is not None:
            raise UserError("policy.model: Wan 2.2 A14B's two experts (transformer_2) are not supported")

    def _latent_shape(self, resolution: int) -> tuple[int, int, int, int]:
        vae = self.pipeline.vae.config
        temporal, spatial = vae.scale_factor_temporal, vae.scale_factor_spatial
        multiple = spatial * self.transformer.config.patch_size[1]
        height, width = resolution, self.options.width or resolution
        for key, side in (("resolution", height), ("width", width)):
            if side % multiple:
                raise UserError(f"policy.{key}: {side} is not a multiple of {multiple} (VAE x patch)")
        frames = self.options.frames
        if (frames - 1) % temporal:
            raise UserError(
                f"policy.frames: {frames} - 1 is not a multiple of the VAE's temporal downscale {temporal} "
                f"(e.g. {(frames - 1) // temporal * temporal + 1})"
            )
        latent_frames = (frames - 1) // temporal + 1
        return (self.transformer.config.in_channels, latent_frames, height // spatial, width // spatial)

    def _image_tokens(self) -> int:
        frames, height, width = self.latent_shape[1:]
        return frames * (height // 2) * (width // 2)

    def recommended_shift(self, steps: int = 28) -> float:
        """The scheduler's static shift: `shift` (flow-matching Euler) or `flow_shift` (UniPC, Wan's)."""
        config = self.pipeline.scheduler.config
        return float(config.get("flow_shift") or config.get("shift") or 1.0)

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, _ = self.pipeline.encode_prompt(
            prompt=prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=self.options.max_sequence_length,
            device=self.device,
        )
        return {"prompt_embeds": embeds.cpu()}

    def _forward(
        self, network: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Cond
    ) -> torch.Tensor:
        timestep = t * self.pipeline.scheduler.config.num_train_timesteps
        if self.pipeline.config.expand_timesteps:  # Wan 2.2 TI2V: one time per token
            timestep = timestep[:, None].expand(-1, self._image_tokens())
        return network(
            hidden_states=x_t,
            timestep=timestep,
            encoder_hidden_states=cond["prompt_embeds"],
            return_dict=False,
        )[0]

    def _decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        config = self.pipeline.vae.config
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(config.latents_mean, device=latents.device, dtype=latents.dtype).view(shape)
        inverse_std = 1.0 / torch.tensor(config.latents_std, device=latents.device, dtype=latents.dtype)
        video = self.pipeline.vae.decode(latents / inverse_std.view(shape) + mean, return_dict=False)[0]
        return video.transpose(1, 2)  # [N, 3, F, H, W] -> frames [N, F, 3, H, W]


__all__ = ["LORA_FILE", "TRANSFORMER_FOLDER", "WanPolicy"]
