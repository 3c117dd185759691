"""The `qwen-image` policy: Qwen-Image (Alibaba's 20B MMDiT with a Qwen2.5-VL text encoder) on diffusers.

Conventions (verified against `QwenImagePipeline` in tests/test_families.py):
- The latent of one image is the VAE's `[16, h, w]` (its causal video VAE at one frame, normalised by a
  per-channel mean and std, which `_decode_latents` undoes); the transformer takes it packed into 2 x 2
  patches as FLUX.1 does, with the image's patch grid for its rotary embedding.
- Our `t` is the scheduler's sigma, which the transformer takes as its timestep; its output is the flow
  velocity `eps - x0`. Qwen-Image is not guidance-distilled (CFG is two passes, which NFT does not use).
- The text is the VL model's last hidden states of the prompt wrapped in the pipeline's system template,
  the template's first 34 tokens dropped, only real tokens kept: stored right-padded to
  `max_sequence_length` with a mask, and each batch cut to its longest prompt before the transformer,
  which is how the pipeline batches prompts.
"""

from __future__ import annotations

import torch

from nft_core.errors import UserError
from nft_core.types import Cond
from nft_policies.base.layout import pack, pad_text, trim_text, unpack
from nft_policies.base.policy import LORA_FILE, TRANSFORMER_FOLDER, FlowTransformerPolicy
from nft_policies.qwen_image.options import QwenImageOptions


class QwenImagePolicy(FlowTransformerPolicy):
    """Qwen-Image transformer with LoRA adapters `default` / `old` (reference = adapters off) or full
    copies; the Qwen2.5-VL encoder and the VAE frozen, prompt embeddings and masks cached per prompt."""

    name = "qwen-image"
    Options = QwenImageOptions

    def _vae_scale(self) -> int:
        return 2 ** len(self.pipeline.vae.config.temperal_downsample)

    def _latent_shape(self, resolution: int) -> tuple[int, int, int]:
        multiple = self._vae_scale() * 2
        if resolution % multiple:
            raise UserError(
                f"policy.resolution: {resolution} is not a multiple of {multiple} "
                f"(VAE downscale {self._vae_scale()} x the 2 x 2 packing)"
            )
        side = resolution // self._vae_scale()
        return (self.transformer.config.in_channels // 4, side, side)

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        length = self.options.max_sequence_length
        embeds, mask = self.pipeline.encode_prompt(prompts, device=self.device, max_sequence_length=length)
        counts = mask.sum(dim=1).tolist() if mask is not None else [embeds.shape[1]] * len(prompts)
        padded = pad_text([row[:count] for row, count in zip(embeds.cpu(), counts, strict=True)], length)
        return {"prompt_embeds": padded["embeds"], "prompt_embeds_mask": padded["mask"]}

    def _forward(
        self, network: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Cond
    ) -> torch.Tensor:
        n, _, height, width = x_t.shape
        embeds, mask = trim_text(cond["prompt_embeds"], cond["prompt_embeds_mask"])
        out = network(
            hidden_states=pack(x_t),
            timestep=t,
            encoder_hidden_states=embeds,
            encoder_hidden_states_mask=None if bool(mask.all()) else mask,  # as the pipeline passes it
            img_shapes=[[(1, height // 2, width // 2)]] * n,
            return_dict=False,
        )[0]
        return unpack(out, height, width)

    def _decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        config = self.pipeline.vae.config
        mean = torch.tensor(config.latents_mean, device=latents.device, dtype=latents.dtype)
        std = torch.tensor(config.latents_std, device=latents.device, dtype=latents.dtype)
        frames = (latents * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)).unsqueeze(2)  # one video frame
        return self.pipeline.vae.decode(frames, return_dict=False)[0][:, :, 0]


__all__ = ["LORA_FILE", "TRANSFORMER_FOLDER", "QwenImagePolicy"]
