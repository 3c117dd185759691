"""The `qwen-image-edit` policy: Qwen-Image-Edit (Qwen-Image's MMDiT conditioned on a source image) on
diffusers, a `ConditionedPolicy`: it encodes prompt items, each with its source image.

Conventions (verified against `QwenImageEditPipeline` in tests/test_families.py):
- The source image is resized as the pipeline resizes it (about `condition_resolution` squared pixels, its
  aspect ratio kept, sides multiples of 32), then it conditions twice: the Qwen2.5-VL encoder reads it
  with the instruction in the pipeline's edit template (the template's first 64 tokens dropped, only real
  tokens kept, stored right-padded with a mask as Qwen-Image's text), and the VAE encodes it (its
  distribution's mode, normalised like the latents) into condition latents.
- The transformer takes the noisy latent's 2 x 2 patches followed by the condition latent's, with both
  grids in `img_shapes`; the velocity is its output on the first ones. Time, latent layout and decoding
  are Qwen-Image's (`nft_policies.qwen_image`).
- CFG's unconditional input is the empty instruction with the same source image (`null_cond_for`), as the
  pipeline's negative prompt; the pipeline's rescaling of the guided velocity to the conditional's norm is
  not reproduced.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from nft_core.errors import UserError
from nft_core.types import CONDITION_IMAGE, SOURCE_IMAGE, Cond, PromptItem
from nft_policies.base.layout import pack, pad_text, trim_text, unpack
from nft_policies.base.policy import LORA_FILE, TRANSFORMER_FOLDER
from nft_policies.qwen_image.policy import QwenImagePolicy
from nft_policies.qwen_image_edit.options import QwenImageEditOptions

KEPT_PICTURES = 64
"""Resized source pictures kept beyond those of the latest `encode_items` (for `null_cond_for`)."""


def condition_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The pipeline's size of a `width x height` source: `resolution`^2 pixels at its aspect ratio, each
    side rounded to a multiple of 32 (`calculate_dimensions`)."""
    ratio = width / height
    side = (resolution * resolution * ratio) ** 0.5
    return round(side / 32) * 32, round(side / ratio / 32) * 32


class QwenImageEditPolicy(QwenImagePolicy):
    """Qwen-Image-Edit with LoRA adapters `default` / `old` or full copies; each (instruction, source image)
    pair's embeddings, mask and condition latents cached."""

    name = "qwen-image-edit"
    Options = QwenImageEditOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._pictures: OrderedDict[int, Any] = OrderedDict()
        """Condition id -> the resized source picture, for the empty instruction of `null_cond_for`."""

    def encode_prompts(self, prompts: Sequence[str]) -> Cond:
        raise UserError(
            "qwen-image-edit edits a source image per prompt: its prompts come from an edit: source "
            '(data.prompts = "edit:PATH", docs/editing.md)'
        )

    def null_cond(self, batch_size: int) -> Cond:
        raise UserError(
            "qwen-image-edit: the unconditional input depends on the source image (null_cond_for)"
        )

    def encode_items(self, items: Sequence[PromptItem]) -> Cond:
        """The instruction and source image of each item: embeddings and mask (cut to the longest) and
        the source's condition latents, one row per item."""
        conditions: dict[int, int] = {}  # a prompt's K samples are one item: its source is read once
        for item in items:
            if id(item) not in conditions:
                conditions[id(item)] = self._remember(item)
        pairs = [(item.prompt, conditions[id(item)]) for item in items]
        cond = self._stacked(self._lookup(pairs, self._encode_pairs), pairs)
        while len(self._pictures) > max(KEPT_PICTURES, len({c for _, c in pairs})):  # this call's stay
            self._pictures.popitem(last=False)
        cond["prompt_embeds"], cond["prompt_embeds_mask"] = trim_text(
            cond["prompt_embeds"], cond["prompt_embeds_mask"]
        )
        return cond

    def null_cond_for(self, cond: Cond) -> Cond:
        """The empty instruction with each row's source image, as long as `cond`'s text."""
        pairs = [("", row) for row in cond["condition_id"].tolist()]
        null = self._stacked(self._lookup(pairs, self._encode_pairs), pairs)
        length = cond["prompt_embeds"].shape[1]
        null["prompt_embeds"], null["prompt_embeds_mask"] = (
            null["prompt_embeds"][:, :length],
            null["prompt_embeds_mask"][:, :length],
        )
        return null

    def _remember(self, item: PromptItem) -> int:
        """The item's condition id (from its image file, else its pixels), its resized picture kept."""
        source = item.metadata.get(SOURCE_IMAGE)
        if not isinstance(source, torch.Tensor) or source.ndim != 3 or source.shape[0] != 3:
            raise UserError(
                f"qwen-image-edit: prompt {item.prompt!r} has no source image [3,H,W] "
                "(its prompts come from an edit: source, docs/editing.md)"
            )
        pixels = (source.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        named = item.metadata.get(CONDITION_IMAGE)
        key = named.encode() if isinstance(named, str) else pixels.numpy().tobytes()
        condition = int(hashlib.sha1(key).hexdigest()[:15], 16)
        if condition in self._pictures:
            self._pictures.move_to_end(condition)
        else:
            from PIL import Image

            picture = Image.fromarray(pixels.permute(1, 2, 0).numpy())
            width, height = condition_size(*picture.size, self.options.condition_resolution)
            self._pictures[condition] = self.pipeline.image_processor.resize(picture, height, width)
        return condition

    @torch.no_grad()
    def _encode_pairs(self, pairs: list[tuple[str, int]]) -> dict[str, torch.Tensor]:
        """Embeddings, mask, condition latents and id of (instruction, condition id) pairs, on the CPU."""
        pipeline, length = self.pipeline, self.options.max_sequence_length
        pictures = [self._pictures[condition] for _, condition in pairs]
        if len({picture.size for picture in pictures}) > 1:
            sizes = ", ".join(sorted({f"{w}x{h}" for w, h in (p.size for p in pictures)}))
            raise UserError(
                f"qwen-image-edit: the source images come out in several sizes ({sizes}) at "
                "policy.condition_resolution; give an epoch's prompts source images of one aspect ratio"
            )
        embeds, mask = pipeline.encode_prompt([p for p, _ in pairs], image=pictures, device=self.device)
        counts = mask.sum(dim=1).tolist() if mask is not None else [embeds.shape[1]] * len(pairs)
        if max(counts) > length:
            raise UserError(
                f"policy.max_sequence_length: {length} is shorter than an instruction with its source "
                f"image's tokens ({max(counts)}); raise it"
            )
        padded = pad_text([row[:count] for row, count in zip(embeds.cpu(), counts, strict=True)], length)
        width, height = pictures[0].size
        pixels = pipeline.image_processor.preprocess(pictures, height, width).unsqueeze(2)
        vae = pipeline.vae
        latents = pipeline._encode_vae_image(pixels.to(self.device, vae.dtype), generator=None)[:, :, 0]
        return {
            "prompt_embeds": padded["embeds"],
            "prompt_embeds_mask": padded["mask"],
            "image_latents": latents.cpu(),
            "condition_id": torch.tensor([condition for _, condition in pairs]),
        }

    def _forward(
        self, network: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Cond
    ) -> torch.Tensor:
        n, _, height, width = x_t.shape
        condition = cond["image_latents"].to(x_t.dtype)
        embeds, mask = trim_text(cond["prompt_embeds"], cond["prompt_embeds_mask"])
        out = network(
            hidden_states=torch.cat([pack(x_t), pack(condition)], dim=1),
            timestep=t,
            encoder_hidden_states=embeds,
            encoder_hidden_states_mask=None if bool(mask.all()) else mask,
            img_shapes=[[(1, height // 2, width // 2), (1, *(s // 2 for s in condition.shape[-2:]))]] * n,
            return_dict=False,
        )[0]
        return unpack(out[:, : (height // 2) * (width // 2)], height, width)


__all__ = ["LORA_FILE", "TRANSFORMER_FOLDER", "QwenImageEditPolicy", "condition_size"]
