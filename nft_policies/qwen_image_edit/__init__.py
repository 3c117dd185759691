"""The `qwen-image-edit` policy (docs/editing.md): Qwen-Image-Edit on `nft_policies.base`; `options`
imports no diffusers."""

from nft_policies.qwen_image_edit.options import QwenImageEditOptions

__all__ = ["QwenImageEditOptions"]
