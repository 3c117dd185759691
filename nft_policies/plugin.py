"""The diffusers policies as a default `nft` plugin, registered through the same hooks as any plugin."""

from __future__ import annotations

from importlib import import_module

from nft_core.hookspecs import hookimpl

POLICIES = {
    "sd3": (
        "nft_policies.sd3",
        "SD3Policy",
        "SD3Options",
        "Stable Diffusion 3 / 3.5 on diffusers: LoRA adapters default/old or full fine-tuning",
    ),
    "flux": (
        "nft_policies.flux",
        "FluxPolicy",
        "FluxOptions",
        "FLUX.1 [dev] / [schnell] on diffusers: packed latents, distilled guidance as an input",
    ),
    "sana": (
        "nft_policies.sana",
        "SanaPolicy",
        "SanaOptions",
        "SANA on diffusers: linear-attention DiT, Gemma-2 text encoder, DC-AE latents",
    ),
    "qwen-image": (
        "nft_policies.qwen_image",
        "QwenImagePolicy",
        "QwenImageOptions",
        "Qwen-Image on diffusers: 20B MMDiT, Qwen2.5-VL text encoder, video-VAE latents",
    ),
    "qwen-image-edit": (
        "nft_policies.qwen_image_edit",
        "QwenImageEditPolicy",
        "QwenImageEditOptions",
        "Qwen-Image-Edit on diffusers: edits a source image per prompt (edit: prompt sources)",
    ),
    "flux2": (
        "nft_policies.flux2",
        "Flux2Policy",
        "Flux2Options",
        "FLUX.2 [dev] on diffusers: Mistral-3 text encoder, distilled guidance as an input",
    ),
    "flux2-klein": (
        "nft_policies.flux2",
        "Flux2KleinPolicy",
        "Flux2KleinOptions",
        "FLUX.2 [klein] on diffusers: the flux2 policy with a Qwen-3 text encoder, no guidance input",
    ),
    "z-image": (
        "nft_policies.z_image",
        "ZImagePolicy",
        "ZImageOptions",
        "Z-Image / Z-Image-Turbo on diffusers: single-stream DiT, Qwen-3 text encoder",
    ),
    "wan": (
        "nft_policies.wan",
        "WanPolicy",
        "WanOptions",
        "Wan 2.1 text-to-video on diffusers: videos [N, F, 3, H, W], frames and fps as options",
    ),
}
"""Policy name -> (package, policy class in its `policy` module, options class, description)."""


def _factory(package: str, class_name: str):
    def build(**options):
        # the policy module imports torch and diffusers: only when a policy is built
        return getattr(import_module(f"{package}.policy"), class_name)(**options)

    return build


@hookimpl
def register_policies(register):
    for name, (package, class_name, options_name, description) in POLICIES.items():
        options = getattr(import_module(f"{package}.options"), options_name)
        register(name, _factory(package, class_name), options=options, description=description)


@hookimpl
def register_levers(register):
    from nft_policies.levers import CacheLever, CacheOptions  # diffusers is imported when a cache is enabled

    register(
        "cache",
        CacheLever,
        options=CacheOptions,
        description="diffusers' feature caches during rollouts (lossy)",
    )
