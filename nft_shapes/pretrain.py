"""Deterministic pretraining of the shipped `shapes-tiny` checkpoint (rectified flow on rendered scenes).

The base model is meant to be like SD3.5-M on GenEval: capable with classifier-free guidance, mediocre
without it. Two ingredients make it so: condition dropout (the unconditional model that CFG needs) and
near-miss label noise (a fraction of the training images show a scene that differs from its prompt in one
detail: colour, class, count +-1, relation, colours), so the conditional distribution is blurred and
guidance (or RL) is what sharpens it. The shipped recipe has two stages (`recipe`). Stage 1 puts that
noise on the four small tags only: on position and colour-attribution scenes, near misses that share the
prompt's bag of words (the reversed relation, swapped colours) kept the model from learning that word
order decides the layout and the colours, which the held-out prompts test (docs/shapes-world.md). Stage 2
(`SECOND_STAGE`) continues with "keep-order" near misses on every tag, which blur what the model shows
without guidance and never contradict word order. Only training prompts are used; held-out prompts never
are.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nft_core.errors import UserError
from nft_core.flow import forward_noising
from nft_core.io import atomic_write_text
from nft_shapes.grammar import TAGS, train_prompts
from nft_shapes.model import TinyUNet, TinyUNetConfig, check_text_encoder
from nft_shapes.policy import (
    MAX_TOKENS,
    TOKENS,
    encode_tokens,
    load_network,
    null_tokens,
    save_network,
)
from nft_shapes.render import render_scene
from nft_shapes.world import CLASSES, COLORS, RELATIONS

TIMESTEP_SAMPLINGS = ("uniform", "logit-normal")
NEAR_MISS_STYLES = ("any", "keep-order")
"""How position and colour-attribution near misses are made: "any" (another relation, the reverse
included; swapped or replaced colours) or "keep-order" (a relation on the other axis; one colour replaced),
so that no near miss shares the prompt's bag of words and contradicts its word order."""
_OTHER_AXIS = {
    "left of": ("above", "below"),
    "right of": ("above", "below"),
    "above": ("left of", "right of"),
    "below": ("left of", "right of"),
}


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines the checkpoint."""

    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    ema_decay: float = 0.999
    condition_dropout: float = 0.15
    label_noise: float = 0.3
    seed: int = 0
    channels: tuple[int, int, int] = (32, 64, 128)
    # The shipped checkpoint's text encoder: a one-layer bidirectional GRU (order-aware, so "a red circle
    # and a blue square" and the two sides of "left of" differ) with a 2D position code before the
    # attention layers. The alternatives (the one-layer transformer of the first checkpoint, ...) are
    # measured in docs/shapes-world.md.
    text_layers: int = 1
    token_init_std: float = 1.0
    position_embedding: bool = True
    text_encoder: str = "gru"
    # how often each tag (in `TAGS` order) is drawn, relative to the others: more counting, position and
    # colour-attribution scenes (all equal draws tags with `rng.integers`, the first checkpoint's stream)
    tag_weights: tuple[float, ...] = (1.0, 1.0, 1.5, 1.0, 3.0, 3.0)
    # how training times t are drawn: "uniform" (the shipped recipe) or "logit-normal" (SD3's
    # sigmoid(N(logit_mean, logit_std)), more weight on the mid-noise steps where shapes are decided)
    timesteps: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # the tags whose scenes get near-miss label noise; scenes of the other tags always show their prompt.
    # Noise on position and color_attr scenes kept the model from learning that word order decides the
    # layout and the colours (their reversed / swapped near misses have the same bag of words)
    label_noise_tags: tuple[str, ...] = ("single_object", "two_object", "counting", "colors")
    # how the near misses of position and colour-attribution scenes are made (see NEAR_MISS_STYLES)
    near_misses: str = "any"
    # a checkpoint to start from instead of random weights (a second stage: same architecture options);
    # the EMA starts from it too
    init: str | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "warmup_steps", "text_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)} must be a whole number >= 1")
        if not self.lr >= 0:  # 0: the weights stay where `init` put them
            raise ValueError(f"lr: {self.lr} must be >= 0")
        if not self.token_init_std >= 0:
            raise ValueError(f"token_init_std: {self.token_init_std} must be >= 0")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay: {self.ema_decay} must be in [0, 1)")
        if not 0 <= self.condition_dropout < 1:
            raise ValueError(f"condition_dropout: {self.condition_dropout} must be in [0, 1)")
        check_text_encoder(self.text_encoder)
        if len(self.tag_weights) != len(TAGS) or min(self.tag_weights) < 0 or sum(self.tag_weights) <= 0:
            raise ValueError(
                f"tag_weights: {list(self.tag_weights)} must be {len(TAGS)} non-negative numbers, one per tag"
                f" in the order {list(TAGS)}, not all zero"
            )
        if self.timesteps not in TIMESTEP_SAMPLINGS:
            raise ValueError(f"timesteps: {self.timesteps!r} is not one of {list(TIMESTEP_SAMPLINGS)}")
        if not self.logit_std > 0:
            raise ValueError(f"logit_std: {self.logit_std} must be > 0")
        unknown = [tag for tag in self.label_noise_tags if tag not in TAGS]
        if unknown:
            raise ValueError(f"label_noise_tags: {unknown} not among the tags {list(TAGS)}")
        if self.near_misses not in NEAR_MISS_STYLES:
            raise ValueError(f"near_misses: {self.near_misses!r} is not one of {list(NEAR_MISS_STYLES)}")
        if not 0 <= self.label_noise <= 1:
            raise ValueError(f"label_noise: {self.label_noise} must be in [0, 1]")


SECOND_STAGE: dict[str, Any] = {
    "steps": 1000,
    "seed": 1,
    "label_noise": 0.4,
    "label_noise_tags": TAGS,
    "near_misses": "keep-order",
}
"""The shipped checkpoint's second stage, continued from the first (`PretrainConfig()`): keep-order near
misses on every tag blur what the model shows without guidance (CFG-free 0.583 -> 0.451) without ever
showing a reversed layout or swapped colours, so the word order the first stage learned stays learnable."""


def first_stage_path(out: Path) -> Path:
    """Where a two-stage recipe for `out` writes its first stage."""
    return out.with_name(f"{out.stem}-stage1{out.suffix}")


def recipe(first: PretrainConfig, out: Path, second_stage: bool = True) -> list[tuple[PretrainConfig, Path]]:
    """The stages that make `out`: `first`, then (`second_stage`) `SECOND_STAGE` continued from it.
    `recipe(PretrainConfig(), out)` is the shipped checkpoint's."""
    if not second_stage:
        return [(first, out)]
    stage1 = first_stage_path(out)
    return [(first, stage1), (dataclasses.replace(first, init=str(stage1), **SECOND_STAGE), out)]


def recorded_config(config: PretrainConfig) -> dict[str, Any]:
    """`config` as a checkpoint's record holds it (JSON types; `init` by file name: paths are local)."""
    record = json.loads(json.dumps(asdict(config)))
    if config.init is not None:
        record["init"] = Path(config.init).name
    return record


def near_miss(metadata: dict[str, Any], rng: np.random.Generator, style: str = "any") -> dict[str, Any]:
    """The metadata of a scene that differs from `metadata` in one detail of its tag (`style`: one of
    `NEAR_MISS_STYLES`)."""
    meta = copy.deepcopy(metadata)
    include = meta["include"]
    tag = meta["tag"]
    if tag in ("single_object", "two_object"):
        clause = include[rng.integers(len(include))]
        used = {c["class"] for c in include}
        clause["class"] = str(rng.choice([c for c in CLASSES if c not in used]))
    elif tag == "counting":
        count = include[0]["count"]
        include[0]["count"] = int(count + (1 if count == 2 else -1 if count == 4 else rng.choice([-1, 1])))
        meta.pop("exclude", None)
    elif tag == "colors":
        include[0]["color"] = str(rng.choice([c for c in COLORS if c != include[0]["color"]]))
    elif tag == "position":
        relation = include[1]["position"][0]
        others = _OTHER_AXIS[relation] if style == "keep-order" else [r for r in RELATIONS if r != relation]
        include[1]["position"][0] = str(rng.choice(others))
    elif tag == "color_attr":
        if style == "any" and rng.random() < 0.5:
            include[0]["color"], include[1]["color"] = include[1]["color"], include[0]["color"]
        else:
            clause = include[rng.integers(2)]
            used = {c["color"] for c in include}
            clause["color"] = str(rng.choice([c for c in COLORS if c not in used]))
    return meta


def scene_metadata(
    metadata: dict[str, Any], rng: np.random.Generator, config: PretrainConfig
) -> dict[str, Any]:
    """What the pretraining scene for a prompt shows: a near miss with probability `config.label_noise` if
    its tag is in `config.label_noise_tags`, else the prompt itself. One uniform draw per scene whatever its
    tag, so with every tag noisy the random stream is the one of the recipes made before this option."""
    noisy = rng.random() < config.label_noise
    if noisy and metadata["tag"] in config.label_noise_tags:
        return near_miss(metadata, rng, config.near_misses)
    return metadata


def draw_tag(rng: np.random.Generator, probabilities: np.ndarray | None) -> int:
    """Index into `TAGS` drawn with `probabilities` (None: all tags equally likely, by `rng.integers`)."""
    if probabilities is None:
        return int(rng.integers(len(TAGS)))
    return int(rng.choice(len(TAGS), p=probabilities))


def draw_times(config: PretrainConfig, generator: torch.Generator) -> torch.Tensor:
    """One training time t in (0, 1) per batch element, drawn as `config.timesteps` says."""
    if config.timesteps == "uniform":
        return torch.rand(config.batch_size, generator=generator)
    normal = torch.randn(config.batch_size, generator=generator)
    return torch.sigmoid(config.logit_mean + config.logit_std * normal)


def _learning_rate(step: int, config: PretrainConfig) -> float:
    # Warmup then constant: nothing depends on the total step count, so the weights after N steps of a
    # longer run are exactly the weights of a run with steps=N (snapshots are reproducible checkpoints).
    return config.lr * min(1.0, (step + 1) / config.warmup_steps)


def snapshot_path(out: Path, step: int) -> Path:
    """Where `pretrain(..., snapshots=[step])` writes the EMA weights after `step` steps."""
    return out.with_name(f"{out.stem}-step{step}{out.suffix}")


def pretrain(
    config: PretrainConfig, out: Path, progress: bool = True, snapshots: Sequence[int] = ()
) -> TinyUNet:
    """Train from scratch and write the EMA weights to `out` (atomically). Same config -> same weights.

    `snapshots`: step counts after which the EMA weights are also written (see `snapshot_path`); each is
    identical to the checkpoint of a run with that many steps.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    by_tag = {tag: [item for item in train_prompts() if item.metadata["tag"] == tag] for tag in TAGS}
    architecture = TinyUNetConfig(
        vocab_size=len(TOKENS),
        max_tokens=MAX_TOKENS,
        channels=config.channels,
        text_layers=config.text_layers,
        token_init_std=config.token_init_std,
        position_embedding=config.position_embedding,
        text_encoder=config.text_encoder,
    )
    model = TinyUNet(architecture)  # built even with `init`: its draws are part of the random stream
    if config.init is not None:
        model = _initial_network(Path(config.init), architecture)
    weights = np.asarray(config.tag_weights, dtype=np.float64)
    tag_probabilities = None if np.all(weights == weights[0]) else weights / weights.sum()
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.time()
    bar = tqdm(range(config.steps), desc="pretrain shapes-tiny", disable=not progress)
    for step in bar:
        items = []
        for _ in range(config.batch_size):  # tags by `tag_weights`, prompts uniform within a tag
            tag_items = by_tag[TAGS[draw_tag(rng, tag_probabilities)]]
            items.append(tag_items[rng.integers(len(tag_items))])
        images = np.stack([render_scene(scene_metadata(it.metadata, rng, config), rng)[0] for it in items])
        x0 = torch.from_numpy(images) * 2 - 1
        cond = encode_tokens([it.prompt for it in items])
        drop = torch.rand(config.batch_size, generator=generator) < config.condition_dropout
        null = null_tokens(config.batch_size)
        cond = {k: torch.where(drop[:, None], null[k], v) for k, v in cond.items()}
        t = draw_times(config, generator)
        eps = torch.randn(x0.shape, generator=generator)
        x_t = forward_noising(x0, t, eps)
        loss = (model(x_t, t, cond["tokens"], cond["mask"]) - (eps - x0)).pow(2).mean()
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        _update_ema(ema, model, config.ema_decay, step)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step + 1 in snapshots and step + 1 != config.steps:
            _write(ema, dataclasses.replace(config, steps=step + 1), snapshot_path(out, step + 1), started)
    _write(ema, config, out, started)
    return ema


def _initial_network(path: Path, architecture: TinyUNetConfig) -> TinyUNet:
    """The network of checkpoint `path`, which must have the architecture this config describes."""
    model = load_network(path)
    if model.config != architecture:
        raise UserError(
            f"init: {path} has the architecture {model.config.to_dict()}, this config describes"
            f" {architecture.to_dict()}"
        )
    return model


def _update_ema(ema: TinyUNet, model: TinyUNet, decay: float, step: int) -> None:
    # The usual warm-started EMA: early on, the average covers only the steps taken so far.
    rate = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for target, source in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
            if target.is_floating_point():
                target.lerp_(source, 1 - rate)
            else:
                target.copy_(source)


def _write(model: TinyUNet, config: PretrainConfig, out: Path, started: float) -> None:
    save_network(model, out)
    record = {
        "config": recorded_config(config),
        "seconds": time.time() - started,
        "threads": torch.get_num_threads(),  # float reductions, hence the exact weights, depend on it
        "command": "nft shapes pretrain",
    }
    if config.init is not None:  # the file it started from, which its name alone does not pin
        record["init_sha256"] = hashlib.sha256(Path(config.init).read_bytes()).hexdigest()
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
