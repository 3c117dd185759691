"""Policies on real model families (diffusers), registered by `nft_policies.plugin`.

* `sd3`: Stable Diffusion 3 / 3.5 (docs/sd3.md).
* `flux`: FLUX.1 [dev] / [schnell] (docs/flux.md).
* `sana`: SANA (docs/sana.md).
* `qwen-image`: Qwen-Image (docs/qwen-image.md).
* `qwen-image-edit`: Qwen-Image-Edit, editing a source image per prompt (docs/editing.md).
* `flux2`, `flux2-klein`: FLUX.2 [dev] and [klein] (docs/flux2.md).
* `z-image`: Z-Image and Z-Image-Turbo (docs/z-image.md).
* `wan`: Wan 2.1 text-to-video (docs/video.md).

Each is a small adapter (its encoder call, its forward, its latent layout) on `nft_policies.base`: the
views (LoRA adapters `default` / `old` or full copies), prompt cache, precision, FSDP2, save / load and
export are written once there.

Nothing here imports diffusers until a policy is built.
"""
