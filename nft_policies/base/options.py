"""The `[policy]` options every diffusers flow-transformer policy shares, and its LoRA table; validating
them imports no diffusers (`nft validate` loads no weights)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nft_core.types import Precision
from nft_policies.base.loading import PipelineSpec

ATTENTION_MODULES = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
)
"""The joint-attention projections of every MMDiT block (image and text streams; SD3 and FLUX name them
alike)."""

FEED_FORWARD_MODULES = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
"""The feed-forward projections of the image stream (`ff`) and the text stream (`ff_context`)."""

DEFAULT_TARGET_MODULES = ATTENTION_MODULES + FEED_FORWARD_MODULES


class LoraOptions(BaseModel):
    """`[policy.lora]`: the LoRA on the transformer (reference: rank 32, alpha 64, gaussian init)."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(32, ge=1, description="LoRA rank r")
    alpha: float = Field(64.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank")
    init: Literal["gaussian", "default"] = Field(
        "gaussian", description="A's init: gaussian (reference) or default (Kaiming); B starts at zero"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    target_modules: list[str] | None = Field(
        None,
        min_length=1,
        description="module name suffixes that get a LoRA (default: the family's attention and "
        "feed-forward projections)",
    )
    merge_for_sampling: Literal["auto"] | bool = Field(
        "auto",
        description="sample with the adapter merged into the weights (one linear a layer instead of "
        "three): auto = on a CPU, where the adapter's small ops cost most; not on a GPU, where the merged "
        "copy of the adapted weights would take memory",
    )


class FlowPolicyOptions(BaseModel):
    """`[policy]` options of every diffusers flow-transformer policy; a family adds its own (`sd3`:
    `t5`, `max_sequence_length`; `flux`: `guidance`, ...) and names its pipeline (`spec`)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    spec: ClassVar[PipelineSpec]
    """The pipeline class and component folders of the family."""
    lora_targets: ClassVar[tuple[str, ...]] = DEFAULT_TARGET_MODULES
    """The modules a LoRA targets when `[policy.lora]` names none."""

    model: str = Field(..., description="hub id (org/name) or a local diffusers folder")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    weights_dir: str | None = Field(
        None,
        description="folder holding downloaded models as <weights_dir>/<org>/<name>/; "
        "default: $NFT_WEIGHTS_DIR, then the Hugging Face cache",
    )
    resolution: int = Field(512, ge=8, description="image side in pixels (square); reference 512")
    lora: bool | LoraOptions = Field(
        True, description="LoRA options (a table), true for the reference LoRA, false for full fine-tuning"
    )
    precision: Precision = Field(
        "fp32",
        description="autocast dtype; frozen weights are stored in it, trained weights stay float32",
    )
    gradient_checkpointing: bool = Field(False, description="recompute transformer activations in backward")
    compile: bool = Field(False, description="torch.compile the transformer(s)")
    keep_reference: bool = Field(
        True,
        description="full fine-tuning: keep a frozen copy of the base model as the `reference` view "
        "(needed when objective.kl_weight > 0)",
    )
    prompt_cache_size: int = Field(1024, ge=0, description="prompt embeddings kept (on the CPU) for reuse")
    text_batch_size: int = Field(32, ge=1, description="prompts per text-encoder call")
    decode_batch_size: int = Field(8, ge=1, description="latents per VAE decode call")

    @property
    def with_optional(self) -> bool:
        """Whether the family's optional components (e.g. SD3's T5) are loaded."""
        return True

    @model_validator(mode="after")
    def _local_folder_is_a_pipeline(self) -> FlowPolicyOptions:
        """A local `model` folder is checked here (cheap, no weights read); a hub id when it loads."""
        from pathlib import Path

        from nft_core.errors import UserError
        from nft_policies.base.loading import check_folder, is_hub_id

        path = Path(self.model).expanduser()
        if is_hub_id(self.model) and not path.exists():
            return self
        try:
            if not path.is_dir():
                what = "is not a folder" if path.exists() else "does not exist"
                raise UserError(f"{self.model!r} {what} (expected a diffusers folder or a hub id org/name)")
            check_folder(path, self.model, self.spec, self.with_optional)
        except UserError as error:
            raise ValueError(str(error).removeprefix("policy.model: ")) from None
        return self

    @field_validator("lora")
    @classmethod
    def _lora_table(cls, value: bool | LoraOptions) -> bool | LoraOptions:
        return LoraOptions() if value is True else value

    @property
    def lora_options(self) -> LoraOptions | None:
        """The LoRA options with the family's target modules filled in, or None in full fine-tuning
        mode (`lora = true`, the default, is the reference LoRA: pydantic runs no validator on it)."""
        lora = LoraOptions() if self.lora is True else self.lora
        if not isinstance(lora, LoraOptions):
            return None
        if lora.target_modules is None:
            lora = lora.model_copy(update={"target_modules": list(self.lora_targets)})
        return lora


__all__ = [
    "ATTENTION_MODULES",
    "DEFAULT_TARGET_MODULES",
    "FEED_FORWARD_MODULES",
    "FlowPolicyOptions",
    "LoraOptions",
]
