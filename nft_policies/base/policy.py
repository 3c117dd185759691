"""What every diffusers flow-matching transformer policy shares (`sd3`, `flux`, `sana`, `qwen-image`,
`qwen-image-edit`, `flux2`, `flux2-klein`, `z-image`, `wan`).

- The three views: LoRA adapters `default` (current) and `old`, the reference = adapters disabled
  (`LoraViews`); or full fine-tuning with a frozen `old` copy and a frozen reference copy.
- The time and velocity convention: our `t in [0, 1]` is the scheduler's sigma and the network's
  output is the flow velocity `eps - x0` of `x_t = (1 - t) x0 + t eps`; each family says how its
  transformer takes `t` and lays out its latents (`_forward`).
- Prompt embeddings computed once per prompt and cached on the CPU (LRU); text encoders and VAE frozen.
- Mixed precision (frozen weights stored in the autocast dtype, trained ones float32), gradient
  checkpointing, `torch.compile`, FSDP2 sharding of full fine-tuning block by block.
- Decoding through the VAE, the distilled-guidance input of guidance-distilled models, and the
  `[solver] shift` that samples on the stock pipeline's time grid (`recommended_shift`).
- save / load: a LoRA in diffusers' format (`load_lora_weights`), full weights as `transformer/`;
  `export` for use without this project.

A family subclasses `FlowTransformerPolicy`, names its `block_lists`, implements `_encode`, `_forward` and
`_latent_shape`, and overrides `_decode_latents` when its VAE's latent is not the plain scaled one. A video
family's latent has a frame axis (`[C, F, h, w]`) and its `_decode_latents` returns frames
`[N, F, 3, H, W]`; an editing family encodes whole prompt items (`encode_items`, the prompt with its
source image, cached per pair through `_lookup`).
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar

import torch

from nft_core.errors import UserError
from nft_core.protocols import VIEWS
from nft_core.types import PRECISION_DTYPES, Cond
from nft_policies.base.layout import grid_shift, resolution_mu
from nft_policies.base.lora import LoraViews
from nft_policies.base.options import FlowPolicyOptions

LORA_FILE = "pytorch_lora_weights.safetensors"
TRANSFORMER_FOLDER = "transformer"
FROZEN_PARTS = ("text_encoder", "text_encoder_2", "text_encoder_3", "vae")


def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval()


class FlowTransformerPolicy(ABC):
    """A diffusers flow-matching transformer with the views `current` / `old` / `reference`.

    Subclasses set `name`, `Options` and `block_lists` and implement `_encode(prompts) -> {name: [N, ...]}`
    (CPU), `_forward(network, x_t, t, cond) -> velocity` and `_latent_shape(resolution)`.
    """

    name = "flow-transformer"
    Options: type[FlowPolicyOptions] = FlowPolicyOptions
    block_lists: ClassVar[tuple[str, ...]] = ("transformer_blocks",)
    """The transformer's module lists of blocks, which FSDP2 shards one block at a time."""

    def __init__(self, **options: Any) -> None:
        from nft_policies.base import loading

        self.options = self.Options(**options)
        opts = self.options
        self.compute_dtype = PRECISION_DTYPES[opts.precision]
        self.pipeline = loading.load_pipeline(
            opts.spec, opts.model, opts.revision, opts.weights_dir, self.compute_dtype, opts.with_optional
        )
        for part in FROZEN_PARTS:
            if getattr(self.pipeline, part, None) is not None:
                _frozen(getattr(self.pipeline, part))
        self.transformer = self.pipeline.transformer
        self.latent_shape = self._latent_shape(opts.resolution)
        self.lora: LoraViews | None = None
        self.old_transformer: torch.nn.Module | None = None
        self.reference_transformer: torch.nn.Module | None = None
        if opts.lora_options is not None:
            self.lora = LoraViews(self.transformer, opts.lora_options)
            self._cast_frozen_weights(self.transformer)
        else:
            self.transformer.requires_grad_(True)
            self.old_transformer = _frozen(copy.deepcopy(self.transformer))
            if opts.keep_reference:
                self.reference_transformer = _frozen(copy.deepcopy(self.transformer).to(self.compute_dtype))
        if opts.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        if opts.compile:
            for network in self._networks():
                network.compile()
        self.device = torch.device("cpu")
        self._merge_for_sampling = self._merges_for_sampling()
        self.sharded = False
        """Whether `fully_shard` sharded the transformers (FSDP2, full fine-tuning)."""
        self._cache: OrderedDict[Hashable, dict[str, torch.Tensor]] = OrderedDict()
        self._null: dict[str, torch.Tensor] | None = None

    # ---- what a family implements -------------------------------------------------------------------
    @abstractmethod
    def _latent_shape(self, resolution: int) -> tuple[int, ...]:
        """The latent of one image `[C, h, w]` at `resolution` px (a UserError when it does not fit)."""

    @abstractmethod
    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The conditioning tensors of `prompts`, one row per prompt, on the CPU."""

    @abstractmethod
    def _forward(
        self, network: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Cond
    ) -> torch.Tensor:
        """The velocity `eps - x0` of `network` at `(x_t, t)` (`t` `[N]` float32), shaped like `x_t`."""

    def _encode_null(self) -> dict[str, torch.Tensor]:
        """The unconditional input of CFG: the empty prompt's `_encode` unless the family differs."""
        return self._encode([""])

    def _decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Our latents (on the VAE's device and dtype) -> the VAE's images in [-1, 1]: undo the scaling and
        shift the pipeline applies, then decode. Families whose VAE latent differs override this."""
        vae = self.pipeline.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return vae.decode(latents / vae.config.scaling_factor + shift, return_dict=False)[0]

    def _image_tokens(self) -> int:
        """The image's transformer tokens (2 x 2 patches of the latent), which set a dynamic time shift."""
        _, height, width = self.latent_shape
        return (height // 2) * (width // 2)

    def _shift_mu(self, steps: int) -> float:
        """`mu` of the scheduler's dynamic shifting at this resolution (the pipelines' `calculate_shift`)."""
        return resolution_mu(self._image_tokens(), self.pipeline.scheduler.config)

    def _blocks(self, network: torch.nn.Module) -> list[torch.nn.Module]:
        """The transformer blocks FSDP2 shards one by one."""
        return [block for name in self.block_lists for block in getattr(network, name)]

    # ---- set-up -------------------------------------------------------------------------------------
    def _vae_scale(self) -> int:
        return 2 ** (len(self.pipeline.vae.config.block_out_channels) - 1)

    def _cast_frozen_weights(self, transformer: torch.nn.Module) -> None:
        """Frozen base weights in the autocast dtype; the LoRA weights stay float32."""
        assert self.lora is not None
        if self.compute_dtype == torch.float32:
            return
        lora = {id(p) for p in (*self.lora.trained.values(), *self.lora.old.values())}
        for parameter in transformer.parameters():
            if id(parameter) not in lora and parameter.is_floating_point():
                parameter.data = parameter.data.to(self.compute_dtype)

    def _networks(self) -> list[torch.nn.Module]:
        return [
            n for n in (self.transformer, self.old_transformer, self.reference_transformer) if n is not None
        ]

    def _autocast(self):
        if self.compute_dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.compute_dtype)

    # ---- prompts ------------------------------------------------------------------------------------
    def _lookup(self, keys: Sequence[Hashable], encode: Callable[[list], dict] | None = None) -> dict:
        """Embeddings of each distinct key (a prompt; an editing family's (prompt, image) pair): from the
        LRU cache, the rest encoded in batches with `encode` (default: `_encode`)."""
        found: dict[Hashable, dict[str, torch.Tensor]] = {}
        missing = []
        for prompt in dict.fromkeys(keys):
            if prompt in self._cache:
                self._cache.move_to_end(prompt)
                found[prompt] = self._cache[prompt]
            else:
                missing.append(prompt)
        step = self.options.text_batch_size
        for start in range(0, len(missing), step):
            batch = missing[start : start + step]
            encoded = (encode or self._encode)(batch)
            for row, prompt in enumerate(batch):
                found[prompt] = {key: value[row].clone() for key, value in encoded.items()}
                if self.options.prompt_cache_size:
                    self._cache[prompt] = found[prompt]
        while len(self._cache) > self.options.prompt_cache_size:
            self._cache.popitem(last=False)
        return found

    def _stacked(self, found: dict, keys: Sequence[Hashable]) -> Cond:
        """`_lookup`'s rows of `keys` stacked into batch-first tensors on the policy's device."""
        names = found[keys[0]].keys() if keys else ()
        return {name: torch.stack([found[k][name] for k in keys]).to(self.device) for name in names}

    def encode_prompts(self, prompts: Sequence[str]) -> Cond:
        """The family's conditioning tensors, one row per prompt, on the policy's device."""
        return self._stacked(self._lookup(prompts), prompts)

    def null_cond(self, batch_size: int) -> Cond:
        """The empty prompt's conditioning (the unconditional input of classifier-free guidance)."""
        if self._null is None:
            self._null = {key: value[0] for key, value in self._encode_null().items()}
        return {
            key: value.to(self.device).expand(batch_size, *value.shape) for key, value in self._null.items()
        }

    # ---- time grid and guidance ---------------------------------------------------------------------
    def recommended_shift(self, steps: int = 28) -> float:
        """The `[solver] shift` whose grid is the stock pipeline's at `steps` steps and this resolution:
        the scheduler's static shift, or its dynamic one (`exp(mu)`, `mu` from the image's token count;
        FLUX.2's also from `steps`). A scheduler's `shift_terminal` (Qwen-Image's) is not reproduced."""
        config = self.pipeline.scheduler.config
        mu = self._shift_mu(steps) if config.get("use_dynamic_shifting") else 0.0
        return grid_shift(mu, config)

    def _guidance_input(self, batch: int, device: torch.device) -> torch.Tensor | None:
        """The `guidance` option as the transformer's distilled-guidance input (FLUX.1-dev, FLUX.2-dev),
        or None for a transformer without a guidance embedding."""
        if not getattr(self.transformer.config, "guidance_embeds", False):
            return None
        return torch.full((batch,), float(getattr(self.options, "guidance", 1.0)), device=device)

    # ---- the network --------------------------------------------------------------------------------
    def velocity(self, view: str, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """The velocity `eps - x0` of one view at `(x_t, t)`."""
        if view not in VIEWS:
            raise ValueError(f"unknown policy view {view!r}; allowed: {', '.join(VIEWS)}")
        t = t.to(device=x_t.device, dtype=torch.float32).expand(x_t.shape[0])
        switch = nullcontext()
        if self.lora is not None:
            network = self.transformer
            # without gradients (sampling, evaluation, the update's old prediction) and
            # with `lora.merge_for_sampling` (auto: on a CPU) the adapter runs folded into the weights
            merged = self._merge_for_sampling and view != "reference" and not torch.is_grad_enabled()
            if network.training:  # back to `current` after the call: gradient checkpointing's backward
                switch = self.lora.use(view, merged)  # reruns the current view's forward after the others'
            elif merged:
                self.lora.merge(view)
            else:  # sampling and evaluation: the view stays, so `old` steps switch once, not twice a step
                self.lora.activate(view)
        else:
            network = self._full_network(view)
        with switch, self._autocast():
            out = self._forward(network, x_t, t, cond)
        if self.sharded and not torch.is_grad_enabled():
            network.reshard()  # FSDP2 keeps the root's weights gathered for a backward; none follows
        return out.to(x_t.dtype)

    def fully_shard(self, mesh) -> None:
        """FSDP2 (`train.parallel = "fsdp2"`): each transformer block and the rest of the current, old and
        reference transformers sharded over `mesh`. Full fine-tuning only: a LoRA is small enough to
        replicate."""
        if self.lora is not None:
            raise UserError(
                "train.parallel: fsdp2 shards full fine-tuning (policy.lora = false); a LoRA is small, "
                'use train.parallel = "replicate"'
            )
        from torch.distributed.fsdp import fully_shard

        for network in self._networks():
            for block in self._blocks(network):
                fully_shard(block, mesh=mesh)
            fully_shard(network, mesh=mesh)
        self.sharded = True

    def rollout_networks(self) -> list[torch.nn.Module]:
        """The transformer sampling runs (under LoRA the one shared with training; else the old copy)."""
        if self.lora is not None:
            return [self.transformer]
        assert self.old_transformer is not None
        return [self.old_transformer]

    def _full_network(self, view: str) -> torch.nn.Module:
        if view == "current":
            return self.transformer
        if view == "old":
            assert self.old_transformer is not None
            return self.old_transformer
        if self.reference_transformer is None:
            raise UserError(
                "the reference view is needed (objective.kl_weight > 0) but policy.keep_reference = false"
            )
        return self.reference_transformer

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images `[N, 3, H, W]` (a video family's frames `[N, F, 3, H, W]`) in `[0, 1]` through
        the VAE (in batches)."""
        images = []
        for chunk in latents.split(self.options.decode_batch_size):
            decoded = self._decode_latents(chunk.to(device=self.device, dtype=self.pipeline.vae.dtype))
            images.append((decoded.float() / 2 + 0.5).clamp(0, 1))
        return torch.cat(images)

    # ---- training state -----------------------------------------------------------------------------
    def trainable_parameters(self) -> Iterable[tuple[str, torch.nn.Parameter]]:
        """LoRA: the `default` adapter's weights; full fine-tuning: every transformer weight."""
        if self.lora is not None:
            return list(self.lora.trained.items())
        return list(self.transformer.named_parameters())

    def old_parameters(self) -> Iterable[tuple[str, torch.Tensor]]:
        """LoRA: the `old` adapter's weights under their `default` twins' names; full: the old copy."""
        if self.lora is not None:
            return list(self.lora.old.items())
        assert self.old_transformer is not None
        return list(self.old_transformer.named_parameters())

    @torch.no_grad()
    def refresh_old(self, decay: float) -> None:
        """`old <- decay * old + (1 - decay) * current`."""
        if self.lora is not None:
            self.lora.refresh(decay)
            return
        assert self.old_transformer is not None
        for old, new in zip(self.old_transformer.parameters(), self.transformer.parameters(), strict=True):
            old.lerp_(new.to(old.dtype), 1.0 - decay)

    def train(self, mode: bool = True) -> FlowTransformerPolicy:
        """Train/eval mode of the trained transformer (frozen parts stay in eval)."""
        self.transformer.train(mode)
        return self

    def _merges_for_sampling(self) -> bool:
        """`policy.lora.merge_for_sampling` on this device (auto: on a CPU) for a LoRA that can be merged."""
        lora_options = self.options.lora_options
        if self.lora is None or lora_options is None or not self.lora.mergeable():
            return False
        wanted = lora_options.merge_for_sampling
        return self.device.type == "cpu" if wanted == "auto" else bool(wanted)

    def to(self, device: torch.device | str) -> FlowTransformerPolicy:
        """Move every component (dtypes unchanged)."""
        if self.lora is not None:
            self.lora.unmerge(forget=True)
        self.device = torch.device(device)
        self._merge_for_sampling = self._merges_for_sampling()
        self.pipeline.to(self.device)
        for network in self._networks():
            network.to(self.device)
        return self

    def save_trainable(self, directory: str) -> None:
        """LoRA: `pytorch_lora_weights.safetensors` (diffusers' `load_lora_weights`); full: `transformer/`."""
        folder = Path(directory)
        if self.lora is not None:
            type(self.pipeline).save_lora_weights(
                str(folder),
                transformer_lora_layers=self.lora.state_dict(),
                transformer_lora_adapter_metadata=self.lora.metadata(),
            )
            return
        if self.sharded:  # the whole weights gathered from their shards (a collective: every rank calls)
            from safetensors.torch import save_file

            state = {
                k: getattr(v, "full_tensor", lambda v=v: v)().detach().cpu().contiguous()
                for k, v in self.transformer.state_dict().items()
            }
            target = folder / TRANSFORMER_FOLDER
            target.mkdir(parents=True, exist_ok=True)
            self.transformer.save_config(str(target))
            save_file(state, str(target / "diffusion_pytorch_model.safetensors"))
            return
        self.transformer.save_pretrained(str(folder / TRANSFORMER_FOLDER), safe_serialization=True)

    def load_trainable(self, directory: str) -> None:
        """Load what `save_trainable` wrote into `current` and `old` (reference stays the base model)."""
        folder = Path(directory)
        if self.lora is not None:
            self._load_lora(folder)
            return
        source = folder / TRANSFORMER_FOLDER
        if not (source / "config.json").is_file():
            raise UserError(f"{folder}: no {TRANSFORMER_FOLDER}/ weights (a full fine-tuning checkpoint)")
        state = type(self.transformer).from_pretrained(str(source)).state_dict()
        try:
            self.transformer.load_state_dict(state)
        except RuntimeError as error:
            raise UserError(
                f"{source}: does not fit this model: {str(error).splitlines()[0][:200]}"
            ) from None
        assert self.old_transformer is not None
        self.old_transformer.load_state_dict(state)

    def export(self, checkpoint: str, out: str, merge: bool = False) -> list[str]:
        """Write a checkpoint's weights into the new folder `out` for use without this project (`nft
        export`): the LoRA in diffusers' format (`pipeline.load_lora_weights(out)`), or with `merge` a
        whole pipeline folder with the LoRA fused in (or the fine-tuned transformer in place), which
        loads with `from_pretrained`. Written into `out.tmp` and renamed; returns the files written."""
        import shutil

        source, target = Path(checkpoint), Path(out)
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        if self.lora is not None and not (source / LORA_FILE).is_file():
            raise UserError(f"{source}: no {LORA_FILE} (a LoRA checkpoint of the {self.name} policy)")
        if self.lora is None and not (source / TRANSFORMER_FOLDER / "config.json").is_file():
            raise UserError(f"{source}: no {TRANSFORMER_FOLDER}/ weights (a full fine-tuning checkpoint)")
        if not merge:
            if self.lora is not None:
                staging.mkdir(parents=True)
                shutil.copy2(source / LORA_FILE, staging / LORA_FILE)
            else:
                shutil.copytree(source / TRANSFORMER_FOLDER, staging / TRANSFORMER_FOLDER)
        else:
            self._merged_pipeline(source).save_pretrained(str(staging), safe_serialization=True)
        staging.rename(target)
        return sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())

    def _merged_pipeline(self, source: Path):
        """The base pipeline (float32) with the checkpoint's LoRA fused in or its transformer loaded."""
        from nft_policies.base import loading

        opts = self.options
        pipeline = loading.load_pipeline(
            opts.spec, opts.model, opts.revision, opts.weights_dir, torch.float32, opts.with_optional
        )
        if self.lora is not None:
            pipeline.load_lora_weights(str(source))
            pipeline.fuse_lora()
            pipeline.unload_lora_weights()
        else:
            trained = type(pipeline.transformer).from_pretrained(str(source / TRANSFORMER_FOLDER))
            pipeline.transformer.load_state_dict(trained.state_dict())
        return pipeline

    def _load_lora(self, folder: Path) -> None:
        assert self.lora is not None
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = folder / LORA_FILE
        if not path.is_file():
            raise UserError(f"{folder}: no {LORA_FILE} (a LoRA checkpoint of the {self.name} policy)")
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        self._check_lora_metadata(path, metadata)
        prefix = "transformer."
        state = {k.removeprefix(prefix): v for k, v in load_file(str(path)).items() if k.startswith(prefix)}
        if not state:
            raise UserError(f"{path}: holds no transformer LoRA weights")
        self.lora.load_state_dict(state, str(path))

    def _check_lora_metadata(self, path: Path, metadata: dict[str, str]) -> None:
        """Rank and alpha set the LoRA's scale: a checkpoint saved with others would load silently wrong."""
        assert self.lora is not None
        raw = metadata.get("lora_adapter_metadata")
        if not raw:
            return
        saved = json.loads(raw)
        if not isinstance(saved, dict):
            return
        ours = self.lora.metadata()
        for key in ("r", "lora_alpha"):
            value = saved.get(f"transformer.{key}")
            if value is not None and float(value) != float(ours[key]):
                raise UserError(
                    f"{path}: saved with {key} = {value}, the policy has {ours[key]} (make policy.lora match)"
                )


__all__ = ["FROZEN_PARTS", "LORA_FILE", "TRANSFORMER_FOLDER", "FlowTransformerPolicy"]
