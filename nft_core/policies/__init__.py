"""Policies on real model families (diffusers), registered by `nft_core.policies.plugin`.

* `sd3`: Stable Diffusion 3 / 3.5 (`StableDiffusion3Pipeline` components) with LoRA adapters
  `default` / `old` or full fine-tuning (docs/sd3.md).
* `geneval` prompt source: GenEval-format training prompts from the public class and colour lists.
* `nft sample`: images (and the GenEval folder layout) from a checkpoint, for `nft eval` / `nft score`.

Nothing here imports diffusers until a policy is built.
"""
