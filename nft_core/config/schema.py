"""The run configuration: TOML validated with pydantic (unknown keys are errors naming their path)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nft_core import registry
from nft_core.errors import ConfigError
from nft_core.loop.precision import REQUESTS, resolve_precision
from nft_core.normalization import NORMALIZERS
from nft_core.options import explain, toml_json, toml_path
from nft_core.outputs.tracking import check_trackers
from nft_core.schedules import LR_SCHEDULES, parse_decay_schedule


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _PluginTable(BaseModel):
    """A table whose `name` picks a plugin; every other undeclared key is that plugin's option."""

    model_config = ConfigDict(extra="allow")

    name: str

    def options(self) -> dict[str, Any]:
        """The plugin's options (every key the table does not declare itself, e.g. not `name`)."""
        return dict(self.model_extra or {})


class PolicyConfig(_PluginTable):
    """`[policy]`: `name`, `init_from`, plus the policy's own options (e.g. `checkpoint`)."""

    name: str = Field(
        "shapes-tiny",
        description="the registered policy (shapes-tiny, sd3, flux, sana or a plugin's); every other key "
        "of the table is that policy's option",
    )
    init_from: str | None = Field(
        None,
        description="warm start: a run directory (its newest checkpoint) or a checkpoint folder whose "
        "weights the run starts from, with a new optimizer and counters (resuming is `nft run --resume`)",
    )


class SolverConfig(_PluginTable):
    """`[solver]` (collection) or `[eval.solver]`: `name` plus the solver's options (`steps`, `shift`)."""

    name: str = Field(
        "dpm2",
        description="the registered solver (euler, heun, dpm2, flow-sde, diffusers or a plugin's); every "
        "other key of the table is that solver's option (steps, shift, ...)",
    )


class ObjectiveConfig(_PluginTable):
    """`[objective]`: the advantage step and the loop's knobs here; every other key (`beta`, `kl_weight`,
    `adv_clip`, ...) is the objective's own option, validated by it."""

    name: str = Field(
        "nft",
        description="the registered objective (nft, rft, flowgrpo or a plugin's); every key of the table "
        "not declared here (beta, kl_weight, adv_clip, ...) is that objective's option",
    )
    adv_mode: Literal["all", "positive", "negative", "binary", "one"] = Field(
        "all",
        description="what the clipped advantages A become: all (A), positive (max(A, 0)), negative "
        "(min(A, 0)), binary (sign(A)), one (1 where A > 0, else 0)",
    )
    global_std: bool = Field(True, description="advantage std over the whole batch (reference) or per prompt")
    old_decay: str = Field(
        "linear-0.001-0.5",
        description="old-policy refresh after each epoch, old <- d old + (1 - d) current with d by "
        "optimizer step: none or type0 (d = 0), linear-<rate>-<max> (type1 = linear-0.001-0.5), "
        "delayed-<start>-<rate>-<max> (type2 = delayed-75-0.0075-0.999), constant-<d>",
    )
    times: str | list[float] = Field(
        "collection",
        description='the times the update trains at: "collection" (the [solver] grid without its final 0,'
        " as the reference) or a list of times in (0, 1]",
    )
    timestep_fraction: float = Field(
        0.99,
        gt=0,
        le=1,
        description="the share of those times each sample trains at, each sample in a random order of its "
        "own (reference 0.99)",
    )
    trained_times: int | None = Field(
        None,
        ge=1,
        description="how many of those times each sample is trained at, instead of timestep_fraction (e.g. 2 "
        "in the embedded default)",
    )
    ema_decay: float = Field(
        0.9,
        ge=0,
        lt=1,
        description="EMA decay of the trained weights per optimizer step (evaluation and checkpoints use it)",
    )

    @field_validator("times")
    @classmethod
    def _times_in_range(cls, value: str | list[float]) -> str | list[float]:
        if isinstance(value, str) and value != "collection":
            raise ValueError('expected "collection" or a list of times in (0, 1]')
        if isinstance(value, list):
            if not value:
                raise ValueError('give at least one time, or "collection"')
            bad = [t for t in value if not 0 < t <= 1]
            if bad:
                raise ValueError(f"times must lie in (0, 1], got {bad[0]}")
        return value

    @model_validator(mode="after")
    def _one_way_to_count_times(self) -> ObjectiveConfig:
        # The default share beside a count is what `config.resolved.toml` holds (it writes every key),
        # not a second way asked for: `nft sample RUN_DIR` reads that file back.
        default = type(self).model_fields["timestep_fraction"].default
        if (
            self.trained_times is not None
            and "timestep_fraction" in self.model_fields_set
            and self.timestep_fraction != default
        ):
            raise ValueError("give trained_times (a count) or timestep_fraction (a share), not both")
        return self

    @field_validator("old_decay")
    @classmethod
    def _known_schedule(cls, value: str) -> str:
        parse_decay_schedule(value)
        return value


class DataConfig(_Strict):
    """`[data]`: training prompts and the epoch's geometry."""

    prompts: str = Field(
        "shapes:train",
        description="a prompt source `name:arg` (e.g. shapes:train, geneval:train-300) or a .txt / GenEval "
        ".jsonl file",
    )
    prompts_per_epoch: int = Field(8, ge=1, description="P: prompts drawn for each epoch")
    images_per_prompt: int = Field(8, ge=2, description="group size K of per-prompt advantages")
    balance_tags: bool = Field(True, description="draw prompts tag-balanced when metadata has a `tag`")
    tag_weights: dict[str, int] = Field(
        default_factory=dict,
        description="with balance_tags: each tag's relative share of the epoch's prompts, e.g. "
        "{ position = 2 } (unlisted tags: 1)",
    )

    @field_validator("tag_weights")
    @classmethod
    def _positive_weights(cls, weights: dict[str, int]) -> dict[str, int]:
        bad = {tag: w for tag, w in weights.items() if w < 1}
        if bad:
            raise ValueError(f"weights must be whole numbers >= 1, got {bad}")
        return weights


class TrainConfig(_Strict):
    """`[train]`: optimisation and run limits."""

    lr: float = Field(3e-4, gt=0, description="AdamW learning rate (reference 3e-4)")
    lr_schedule: Literal[LR_SCHEDULES] = Field(
        "constant",
        description="constant (the reference), or cosine / linear from lr down to lr_final x lr at the last "
        "of the run's epochs x optimizer_steps_per_epoch steps (metrics.jsonl logs lr)",
    )
    lr_final: float = Field(0.0, ge=0, le=1, description="cosine / linear: the last step's share of lr")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay (reference 1e-4)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    epochs: int = Field(
        100, ge=1, description="the budget in epochs of collection and update (resuming with more trains on)"
    )
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="also stop after this much training wall-clock (evaluations not counted; the epochs it "
        "buys depend on the machine)",
    )
    optimizer_steps_per_epoch: int = Field(
        1, ge=1, description="AdamW steps per epoch; the epoch's micro-batches are split evenly among them"
    )
    inner_epochs: int = Field(1, ge=1, description="passes over the epoch's samples (fresh noise each pass)")
    batch_size: int = Field(32, ge=1, description="micro-batch of the update (per device)")
    sample_batch_size: int = Field(64, ge=1, description="micro-batch of sampling (per device)")
    overlap_scoring: bool = Field(
        True,
        description="score each finished sampling micro-batch on a worker thread while the next one is "
        "sampled (false: after it, in the same thread; the scores are the same either way)",
    )
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clipped to this before each step")
    seed: int = Field(0, description="seed of every random draw: prompts, sampling and training noise, plan")
    device: str = Field(
        "cpu", description="torch device: cpu or cuda (under torchrun each rank takes cuda:LOCAL_RANK)"
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    parallel: Literal["replicate", "fsdp2"] = Field(
        "replicate",
        description="under torchrun: replicate (every rank holds the whole model; gradients summed) or "
        "fsdp2 (parameters, gradients, old copy and EMA sharded over the ranks; policies that support it)",
    )
    shard_ranks: int | None = Field(
        None,
        ge=1,
        description="with parallel = fsdp2: ranks per shard group; the groups replicate one another (HSDP)."
        " Default: one node's ranks (torchrun's LOCAL_WORLD_SIZE), so nodes replicate and shard inside",
    )
    collective_timeout: float = Field(
        600.0,
        gt=0,
        description="under torchrun: seconds a collective may wait for the other ranks before the job "
        "fails (a rank that hangs ends the run instead of stalling it)",
    )
    precision: Literal[REQUESTS] = Field(
        "auto",
        description="dtype of the policy's forward passes in collection and update (autocast; fp32 master"
        " weights, loss and evaluation). auto: bf16 where the device computes it natively, else fp32;"
        " fp16 adds a loss scaler",
    )


class RewardConfig(_Strict):
    """One `[[reward]]`: a registered reward, its weight and per-reward normalization."""

    name: str = Field(description="the registered reward (`nft plugins` lists them)")
    alias: str | None = Field(
        None,
        description="name in metrics and composition (default: `name`); one reward can appear twice under "
        "two aliases, e.g. two outcomes",
    )
    weight: float = Field(1.0, description="weight of this reward's normalized score in the sum")
    normalize: str = Field("none", description=f"one of {', '.join(NORMALIZERS)}")
    scale: float = Field(1.0, description="normalize = affine: scale * raw + shift")
    shift: float = Field(0.0, description="normalize = affine: scale * raw + shift")
    momentum: float = Field(
        0.99, ge=0, lt=1, description="normalize = running-zscore: momentum of the running mean and variance"
    )
    required: bool = Field(
        True,
        description="false: a reward that cannot be built (e.g. its server is down) is skipped with a "
        "warning, and an epoch where its calls fail leaves it out of the total instead of dropping samples",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the reward's own options (`[reward.options]`), checked by the reward's options model",
    )

    @property
    def label(self) -> str:
        """The name this reward goes by in metrics and the weighted sum."""
        return self.alias or self.name

    @field_validator("weight", "scale", "shift")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")  # the line adds "(got nan)"
        return value

    @field_validator("normalize")
    @classmethod
    def _known_normalizer(cls, value: str) -> str:
        if value not in NORMALIZERS:
            raise ValueError(f"unknown normalization {value!r}; allowed: {', '.join(NORMALIZERS)}")
        return value


class EvalConfig(_Strict):
    """`[eval]`: the fixed, paired evaluation (EMA weights, fixed noise per image)."""

    prompts: str = Field("shapes:eval", description="prompt source or file; never trained on")
    images_per_prompt: int = Field(1, ge=1, description="images sampled per evaluation prompt")
    every: int = Field(0, ge=0, description="evaluate every N epochs (0: only before and after)")
    seed: int = Field(1234, description="seed of the fixed noise: an image gets the same noise every time")
    baseline_guidance: list[float] = Field(
        default_factory=list,
        description="CFG scales at which the base model is also evaluated (none unless asked: each costs"
        " one more evaluation at twice the price)",
    )
    solver: SolverConfig = Field(
        default_factory=lambda: SolverConfig(name="euler", steps=40),
        description="`[eval.solver]`: the evaluation solver, a table like `[solver]` "
        "(default: euler, 40 steps)",
    )
    reward: list[RewardConfig] = Field(
        default_factory=list,
        description="`[[eval.reward]]`: monitor rewards, scored at every evaluation and never trained on "
        "(a trained reward that is being hacked rises while these do not)",
    )


class LogConfig(_Strict):
    """`[log]`: what the run directory gets besides metrics."""

    grid_every: int = Field(5, ge=0, description="sample grid every N epochs (0: never)")
    grid_images: int = Field(32, ge=1, description="images in each sample grid")
    checkpoint_every: int = Field(0, ge=0, description="checkpoint every N epochs (0: only at the end)")
    keep_checkpoints: int = Field(
        0, ge=0, description="keep the newest N checkpoints (0: all); older ones are deleted"
    )
    keep_best: bool = Field(
        True, description="with keep_checkpoints: also keep the checkpoint of the best evaluation score"
    )
    progress: bool = Field(True, description="progress bars on the console (rank 0 only)")
    monitors: list[str] = Field(
        default_factory=lambda: ["pixel-diversity"],
        description="registered monitors of each epoch's samples (`nft plugins` lists them), logged as "
        "monitor/<name>/<key>: e.g. pixel-diversity, shapes-diversity",
    )
    trackers: list[str] = Field(
        default_factory=list,
        description="registered experiment trackers that get every metrics.jsonl record and sample grid "
        "(rank 0; `nft plugins` lists them): tensorboard, wandb (docs/trackers.md)",
    )
    tracker_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="`[log.tracker_options.<name>]`: a tracker's options, e.g. "
        '[log.tracker_options.wandb] project = "nft"',
    )


class RunConfig(_Strict):
    """A whole run."""

    name: str = Field("run", description="the run directory's name: runs/<name> (or -2, -3, ... if taken)")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="`[policy]`: the trained model")
    solver: SolverConfig = Field(
        default_factory=SolverConfig, description="`[solver]`: the solver that collects each epoch's samples"
    )
    objective: ObjectiveConfig = Field(
        default_factory=ObjectiveConfig, description="`[objective]`: the advantage step and the training loss"
    )
    data: DataConfig = Field(default_factory=DataConfig, description="`[data]`: prompts, epoch geometry")
    train: TrainConfig = Field(default_factory=TrainConfig, description="`[train]`: optimisation, limits")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="`[eval]`: the fixed, paired evaluation")
    log: LogConfig = Field(default_factory=LogConfig, description="`[log]`: grids, checkpoints, monitors")
    reward: list[RewardConfig] = Field(
        min_length=1, description="`[[reward]]`: the trained rewards (one or more), summed by weight"
    )

    @model_validator(mode="after")
    def _unique_reward_labels(self) -> RunConfig:
        seen: set[str] = set()
        for index, reward in enumerate(self.reward):
            if reward.label in seen:
                raise ValueError(
                    f"reward[{index}]: a second reward named {reward.label!r}; give it an `alias` "
                    "(e.g. two outcomes of one reward)"
                )
            seen.add(reward.label)
        for index, reward in enumerate(self.eval.reward):
            if reward.label in seen:
                raise ValueError(
                    f"eval.reward[{index}]: {reward.label!r} is already a reward's name; give it an `alias`"
                )
            seen.add(reward.label)
        if all(reward.weight == 0 for reward in self.reward):
            raise ValueError("reward: every weight is 0, so nothing would be trained; give one a weight")
        return self


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """`a.b=value` / `reward[0].weight=2` -> (path parts, value parsed as a TOML literal, else a string)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    parts: list[str | int] = []
    for piece in key.strip().replace("]", "").replace("[", ".").split("."):
        if piece:
            parts.append(int(piece) if piece.isdigit() else piece)
    if not parts or isinstance(parts[0], int):
        raise ConfigError(f"--set {text!r}: the key must start with a table or key name, e.g. train.lr=1e-4")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def apply_override(data: dict[str, Any], parts: list[str | int], value: Any) -> None:
    """Set a nested key in the raw TOML dict (creating tables as needed)."""
    node: Any = data
    for depth, (part, following) in enumerate(zip(parts[:-1], parts[1:], strict=True)):
        _check_container(node, part, parts, depth)
        if isinstance(part, int):
            if part >= len(node):
                raise ConfigError(f"--set {toml_path(tuple(parts))}: index {part} is out of range")
            node = node[part]
        else:
            node = node.setdefault(part, [] if isinstance(following, int) else {})
    last = parts[-1]
    _check_container(node, last, parts, len(parts) - 1)
    if isinstance(last, int):  # replace an element, or append one right after the last
        if last > len(node):
            raise ConfigError(
                f"--set {toml_path(tuple(parts))}: index {last} is out of range (allowed: 0 to {len(node)})"
            )
        node[last : last + 1] = [value]
        return
    node[last] = value


def _check_container(node: Any, part: str | int, parts: list[str | int], depth: int) -> None:
    """A ConfigError unless `node` (the value at `parts[:depth]`) can hold `part`: a table for a name,
    an array for an index."""
    where = toml_path(tuple(parts[:depth])) if depth else "the top level"
    if isinstance(part, int) and not isinstance(node, list):
        raise ConfigError(f"--set {toml_path(tuple(parts))}: {where} is not an array, so it has no [{part}]")
    if isinstance(part, str) and isinstance(node, list):
        raise ConfigError(
            f"--set {toml_path(tuple(parts))}: {where} is an array of tables; give an index, e.g. "
            f"{where}[0].{part}"
        )
    if isinstance(part, str) and not isinstance(node, dict):
        raise ConfigError(f"--set {toml_path(tuple(parts))}: {where} is a value, not a table with keys")


def load_raw(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a syntax error names the file and line."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a TOML config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a TOML config is UTF-8 text)") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    except OSError as error:  # unreadable: permissions, a broken link, ...
        raise ConfigError(f"{path}: cannot read the config: {error.strerror or error}") from None
    if not data:
        raise ConfigError(f"{path}: an empty config (a run needs at least one [[reward]] table)")
    return data


RENAMED = {("sampler",): "solver", ("eval", "sampler"): "eval.solver"}
"""Tables renamed since an earlier release: an old config gets one line saying the new name."""


def _check_renamed(data: dict[str, Any]) -> None:
    for old, new in RENAMED.items():
        node: Any = data
        for part in old:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            raise ConfigError(f"{'.'.join(old)}: renamed to {new} (write [{new}])")


def validate(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate the raw dict, then each plugin's own table with the options model it registered."""
    try:
        _check_renamed(data)
        config = RunConfig.model_validate_json(toml_json(data), strict=True)  # TOML types, no coercion
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    except ValidationError as error:
        raise ConfigError(f"{source}: {explain(error, RunConfig)}") from None
    checks = [
        ("policies", config.policy.name, config.policy.options(), "policy", "policy"),
        ("solvers", config.solver.name, config.solver.options(), "solver", "solver"),
        ("solvers", config.eval.solver.name, config.eval.solver.options(), "eval.solver", "eval.solver"),
        ("objectives", config.objective.name, config.objective.options(), "objective", "objective"),
    ]
    for index, reward in enumerate(config.reward):
        checks.append(
            ("rewards", reward.name, reward.options, f"reward[{index}]", f"reward[{index}].options")
        )
    try:
        for kind, name, options, table, options_path in checks:
            registry.get(kind, name, f"{table}.name")
            registry.check_options(kind, name, options, options_path, toml=True)
        check_trackers(config.log.trackers, config.log.tracker_options)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return config


def resolved_config(config: RunConfig) -> dict[str, Any]:
    """`config` as a run directory's `config.resolved.toml` holds it: TOML types, unset options left
    out, `train.precision = "auto"` replaced by what it resolves to on this machine."""
    data = config.model_dump(mode="json", exclude_none=True)
    data["train"]["precision"] = resolve_precision(config.train.precision, config.train.device)
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load, override (`--set`) and validate a run config."""
    data = load_raw(path)
    for text in overrides or []:
        parts, value = parse_override(text)
        apply_override(data, parts, value)
    return validate(data, str(path))
