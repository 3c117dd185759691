"""The `z-image` policy: Z-Image (Tongyi-MAI's 6B single-stream DiT with a Qwen-3 text encoder) on diffusers.

Conventions (verified against `ZImagePipeline` in tests/test_families.py):
- The latent of one image is the VAE's `[16, h, w]` (scaled and shifted as FLUX.1's); the transformer
  takes a list of single-frame latents `[16, 1, h, w]` and patchifies them itself.
- Its time runs the other way: it takes `1 - t` (the pipeline's `(1000 - timestep) / 1000`) and returns
  `x0 - eps`; the policy passes `1 - t` and negates, so the velocity is `eps - x0` in our convention.
- The text is Qwen-3's second-to-last hidden states of the prompt as a chat turn, only real tokens kept:
  stored right-padded to `max_sequence_length` with a mask, handed to the transformer as the list of each
  prompt's real tokens (the transformer pads them itself).
"""

from __future__ import annotations

import torch

from nft_core.errors import UserError
from nft_core.types import Cond
from nft_policies.base.layout import pad_text
from nft_policies.base.policy import LORA_FILE, TRANSFORMER_FOLDER, FlowTransformerPolicy
from nft_policies.z_image.options import ZImageOptions


class ZImagePolicy(FlowTransformerPolicy):
    """Z-Image transformer with LoRA adapters `default` / `old` (reference = adapters off) or full copies;
    the Qwen-3 encoder and the VAE frozen, prompt embeddings and masks cached per prompt."""

    name = "z-image"
    Options = ZImageOptions
    block_lists = ("noise_refiner", "context_refiner", "layers")

    def _latent_shape(self, resolution: int) -> tuple[int, int, int]:
        multiple = self._vae_scale() * 2
        if resolution % multiple:
            raise UserError(
                f"policy.resolution: {resolution} is not a multiple of {multiple} "
                f"(VAE downscale {self._vae_scale()} x patch size 2)"
            )
        side = resolution // self._vae_scale()
        return (self.transformer.config.in_channels, side, side)

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        length = self.options.max_sequence_length
        rows, _ = self.pipeline.encode_prompt(  # a copy: the pipeline rewrites the list in place
            list(prompts), device=self.device, do_classifier_free_guidance=False, max_sequence_length=length
        )
        padded = pad_text([row.cpu() for row in rows], length)
        return {"prompt_embeds": padded["embeds"], "prompt_mask": padded["mask"]}

    def _forward(
        self, network: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Cond
    ) -> torch.Tensor:
        mask = cond["prompt_mask"].bool()
        captions = [embeds[keep] for embeds, keep in zip(cond["prompt_embeds"], mask, strict=True)]
        out = network(list(x_t.unsqueeze(2).unbind(0)), 1 - t, captions, return_dict=False)[0]
        return -torch.stack(out).squeeze(2)


__all__ = ["LORA_FILE", "TRANSFORMER_FOLDER", "ZImagePolicy"]
