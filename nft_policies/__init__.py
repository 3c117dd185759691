"""Policies on real model families (diffusers), registered by `nft_policies.plugin`.

* `sd3`: Stable Diffusion 3 / 3.5 (`StableDiffusion3Pipeline` components) with LoRA adapters
  `default` / `old` or full fine-tuning (docs/sd3.md).
* `flux`: FLUX.1 [dev] / [schnell] (`FluxPipeline` components), the same views (docs/flux.md).

Both stand on `nft_policies.base` (views, prompt cache, precision, FSDP2, save / load).

Nothing here imports diffusers until a policy is built.
"""
