"""The `sana` policy: SANA (NVIDIA's linear-attention DiT with a deep-compression autoencoder) on diffusers.

Conventions (verified against `SanaPipeline` in tests/test_families.py and tests/test_sana_policy.py):
our `t in [0, 1]` is the flow scheduler's sigma, the transformer's `timestep` is
`t * 1000 * timestep_scale`, and its output is the flow velocity `eps - x0` (with a learned-sigma head,
its first half). The text is Gemma-2's last
hidden states over `max_sequence_length` tokens (the first and the last ones kept, as the pipeline
selects them) with their attention mask; by default each prompt is prefixed with SANA's prompt
enhancing instruction, which the empty prompt of CFG never gets.
"""

from __future__ import annotations

import inspect

import torch

from nft_core.errors import UserError
from nft_core.types import Cond
from nft_policies.base.policy import LORA_FILE, TRANSFORMER_FOLDER, FlowTransformerPolicy
from nft_policies.sana.options import SanaOptions


def _default_instruction(pipeline) -> list[str]:
    """The prompt-enhancing instruction `SanaPipeline.__call__` uses by default."""
    return list(inspect.signature(type(pipeline).__call__).parameters["complex_human_instruction"].default)


class SanaPolicy(FlowTransformerPolicy):
    """SANA transformer with LoRA adapters `default` / `old` (reference = adapters off) or full copies;
    the Gemma text encoder and the DC-AE frozen, prompt embeddings and masks cached per prompt."""

    name = "sana"
    Options = SanaOptions

    def __init__(self, **options) -> None:
        super().__init__(**options)
        config = self.transformer.config
        self.timestep_scale = float(getattr(config, "timestep_scale", 1.0)) * float(
            self.pipeline.scheduler.config.num_train_timesteps
        )
        self.learned_sigma = config.out_channels // 2 == self.latent_shape[0]
        self.instruction = (
            _default_instruction(self.pipeline) if self.options.complex_human_instruction else None
        )

    def _vae_scale(self) -> int:
        return 2 ** (len(self.pipeline.vae.config.encoder_block_out_channels) - 1)

    def _latent_shape(self, resolution: int) -> tuple[int, int, int]:
        vae_scale, patch = self._vae_scale(), self.transformer.config.patch_size
        if resolution % (vae_scale * patch):
            raise UserError(
                f"policy.resolution: {resolution} is not a multiple of {vae_scale * patch} "
                f"(DC-AE downscale {vae_scale} x patch size {patch})"
            )
        side = resolution // vae_scale
        return (self.pipeline.vae.config.latent_channels, side, side)

    @torch.no_grad()
    def _encode_with(self, prompts: list[str], instruction: list[str] | None) -> dict[str, torch.Tensor]:
        embeds, mask, _, _ = self.pipeline.encode_prompt(
            prompts,
            do_classifier_free_guidance=False,
            device=self.device,
            clean_caption=False,
            max_sequence_length=self.options.max_sequence_length,
            complex_human_instruction=instruction,
        )
        return {"prompt_embeds": embeds.cpu(), "prompt_attention_mask": mask.cpu()}

    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        return self._encode_with(prompts, self.instruction)

    def _encode_null(self) -> dict[str, torch.Tensor]:
        return self._encode_with([""], None)  # the pipeline's negative prompt: no instruction

    def _forward(
        self, network: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Cond
    ) -> torch.Tensor:
        out = network(
            x_t,
            encoder_hidden_states=cond["prompt_embeds"],
            encoder_attention_mask=cond["prompt_attention_mask"],
            timestep=t * self.timestep_scale,
            return_dict=False,
        )[0]
        return out.chunk(2, dim=1)[0] if self.learned_sigma else out


__all__ = ["LORA_FILE", "TRANSFORMER_FOLDER", "SanaPolicy"]
