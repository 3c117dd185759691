"""The `shapes-tiny` policy: the tiny UNet in pixel space with full-parameter old and reference copies."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from safetensors.torch import load_file, save

from nft_core.errors import UserError
from nft_core.io import atomic_write_bytes
from nft_core.protocols import VIEWS
from nft_core.types import Cond
from nft_shapes.grammar import VOCAB, tokenize
from nft_shapes.model import TinyUNet, TinyUNetConfig
from nft_shapes.world import IMAGE_SIZE

SHIPPED_CHECKPOINT = Path(__file__).parent / "checkpoints" / "shapes-tiny.safetensors"
SPECIAL_TOKENS = ("<pad>", "<null>", "<unk>")
PAD, NULL, UNK = 0, 1, 2
TOKENS = SPECIAL_TOKENS + tuple(VOCAB)
MAX_TOKENS = 8


def encode_tokens(prompts: Sequence[str], max_tokens: int = MAX_TOKENS) -> Cond:
    """Word tokens of the grammar (unknown words -> <unk>, truncated to `max_tokens`) and their mask."""
    index = {word: i for i, word in enumerate(TOKENS)}
    tokens = torch.full((len(prompts), max_tokens), PAD, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids = [index.get(word, UNK) for word in tokenize(prompt)][:max_tokens] or [NULL]
        tokens[row, : len(ids)] = torch.tensor(ids)
    return {"tokens": tokens, "mask": tokens != PAD}


def null_tokens(batch_size: int, max_tokens: int = MAX_TOKENS) -> Cond:
    """The unconditional prompt: a single <null> token (used for condition dropout and CFG)."""
    tokens = torch.full((batch_size, max_tokens), PAD, dtype=torch.long)
    tokens[:, 0] = NULL
    return {"tokens": tokens, "mask": tokens != PAD}


def save_network(model: TinyUNet, path: Path, half: bool = True) -> None:
    """Weights as safetensors (fp16 by default: the shipped file stays a few MB) with the config inside."""

    def whole(value: torch.Tensor) -> torch.Tensor:  # a sharded (FSDP2) weight: gathered, on every rank
        gather = getattr(value, "full_tensor", None)
        return (gather() if gather is not None else value).detach().cpu()

    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous()
        for k, v in ((k, whole(v)) for k, v in model.state_dict().items())
    }
    payload = save(state, metadata={"config": json.dumps(model.config.to_dict()), "format": "shapes-tiny"})
    atomic_write_bytes(path, payload)


def checkpoint_config(path: Path) -> dict:
    """The network config stored in a shapes-tiny checkpoint file; a one-line UserError when the file is
    missing, not safetensors, or not a shapes-tiny checkpoint (reads only the file's header)."""
    if not path.is_file():
        if path == SHIPPED_CHECKPOINT:  # the package lost its data file: it can be rebuilt
            raise UserError(
                f"shapes-tiny checkpoint not found: {path}; reinstall the package or reproduce it with "
                f"`nft shapes pretrain --out {path}` (about an hour on 2 cores)"
            )
        raise UserError(
            f"shapes-tiny checkpoint not found: {path}; check the path (an unset policy.checkpoint is "
            "the shipped model)"
        )
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise UserError(f"{path}: not a safetensors file ({error})") from None
    if "config" not in metadata:
        raise UserError(f"{path}: not a shapes-tiny checkpoint (no config in the safetensors metadata)")
    return json.loads(metadata["config"])


def load_network(path: Path) -> TinyUNet:
    """Build the network from a safetensors file written by `save_network`."""
    model = TinyUNet(TinyUNetConfig.from_dict(checkpoint_config(path)))
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(state)
    return model


class ShapesTinyOptions(BaseModel):
    """`[policy]` options of `shapes-tiny`."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = Field(
        None, description="safetensors file; default: the shipped pretrained model"
    )

    @field_validator("checkpoint")
    @classmethod
    def _readable_checkpoint(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                checkpoint_config(Path(value))
            except UserError as error:  # said at policy.checkpoint by the options' validation
                raise ValueError(str(error)) from None
        return value

    channels_last: bool = Field(
        True, description="NHWC memory format: same maths, ~20% faster convolutions on CPU (oneDNN)"
    )


class ShapesTinyPolicy:
    """Pixel-space tiny UNet; `current` is trained, `old` and `reference` are full frozen copies."""

    name = "shapes-tiny"
    latent_shape = (3, IMAGE_SIZE, IMAGE_SIZE)

    def __init__(self, checkpoint: str | None = None, channels_last: bool = True) -> None:
        self.options = ShapesTinyOptions(checkpoint=checkpoint, channels_last=channels_last)
        self.checkpoint = Path(checkpoint) if checkpoint else SHIPPED_CHECKPOINT
        self.memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        self.model = load_network(self.checkpoint).to(memory_format=self.memory_format)
        self.old_model = self._frozen_copy()
        self.reference_model = self._frozen_copy()
        self.device = torch.device("cpu")
        self.sharded = False
        """Whether `fully_shard` sharded the networks (FSDP2)."""

    def _frozen_copy(self) -> TinyUNet:
        clone = copy.deepcopy(self.model)
        clone.requires_grad_(False)
        clone.eval()
        return clone

    def _network(self, view: str) -> TinyUNet:
        if view not in VIEWS:
            raise ValueError(f"unknown policy view {view!r}; allowed: {', '.join(VIEWS)}")
        return {"current": self.model, "old": self.old_model, "reference": self.reference_model}[view]

    def encode_prompts(self, prompts: Sequence[str]) -> Cond:
        """Token ids and mask on the policy's device."""
        return {k: v.to(self.device) for k, v in encode_tokens(prompts).items()}

    def null_cond(self, batch_size: int) -> Cond:
        """The empty prompt."""
        return {k: v.to(self.device) for k, v in null_tokens(batch_size).items()}

    def velocity(self, view: str, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """Velocity of one view at (x_t, t) for the given prompt tokens."""
        x_t = x_t.contiguous(memory_format=self.memory_format)
        network = self._network(view)
        out = network(x_t, t, cond["tokens"], cond["mask"])
        if self.sharded and not torch.is_grad_enabled():
            # FSDP2 keeps a root module's weights gathered after a forward, for the backward that
            # follows; with none to follow, shard them again (refresh_old and the EMA work on shards)
            network.reshard()
        return out

    def rollout_networks(self) -> list[torch.nn.Module]:
        """The network sampling runs: the old copy (levers such as `compile` transform it)."""
        return [self.old_model]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixel space in [-1, 1] -> images in [0, 1]."""
        return ((latents.float() + 1) / 2).clamp(0, 1)

    def trainable_parameters(self) -> Iterable[tuple[str, torch.nn.Parameter]]:
        """All parameters of the current network."""
        return list(self.model.named_parameters())

    def old_parameters(self) -> Iterable[tuple[str, torch.Tensor]]:
        """All parameters of the old network (the names of the current one's)."""
        return list(self.old_model.named_parameters())

    @torch.no_grad()
    def refresh_old(self, decay: float) -> None:
        """theta_old <- decay * theta_old + (1 - decay) * theta."""
        for old, new in zip(self.old_model.parameters(), self.model.parameters(), strict=True):
            old.lerp_(new, 1.0 - decay)

    def fully_shard(self, mesh) -> None:
        """FSDP2: shard the current, old and reference networks over `mesh` (`train.parallel = fsdp2`)."""
        from torch.distributed.fsdp import fully_shard

        # FSDP2 shards contiguous parameters only: channels-last convolution weights are not
        self.memory_format = torch.contiguous_format
        for network in (self.model, self.old_model, self.reference_model):
            network.to(memory_format=torch.contiguous_format)
            fully_shard(network, mesh=mesh)
        self.sharded = True

    def train(self, mode: bool = True) -> ShapesTinyPolicy:
        """Train/eval mode of the current network (the copies stay in eval)."""
        self.model.train(mode)
        return self

    def to(self, device: torch.device | str) -> ShapesTinyPolicy:
        self.device = torch.device(device)
        for network in (self.model, self.old_model, self.reference_model):
            network.to(self.device)
        return self

    def save_trainable(self, directory: str) -> None:
        """The current network as `model.safetensors` (fp32) in `directory`."""
        save_network(self.model, Path(directory) / "model.safetensors", half=False)

    def load_trainable(self, directory: str) -> None:
        """Load the current network (and sync old) from `save_trainable`'s output."""
        state = load_network(Path(directory) / "model.safetensors").state_dict()
        self.model.load_state_dict(state)
        self.old_model.load_state_dict(state)


__all__ = [
    "ShapesTinyOptions",
    "ShapesTinyPolicy",
    "checkpoint_config",
    "encode_tokens",
    "load_network",
    "null_tokens",
    "save_network",
]
