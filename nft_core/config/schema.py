"""The run configuration's schema: one pydantic model per TOML table, each field with its description
(the generated config reference is made from them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nft_core.loop.precision import REQUESTS
from nft_core.normalization import NORMALIZERS
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
    overlap_scoring: bool | Literal["auto"] = Field(
        "auto",
        description="score each finished sampling micro-batch on a worker thread while the next one is "
        "sampled (false: after it, in the same thread; the scores are the same either way). auto: only "
        "where scoring does not compete with sampling for the CPU's threads: on a CUDA device, or when "
        "every reward scores elsewhere (remote); on a CPU a scoring thread slowed every small op of "
        "the sampler (docs/serving.md)",
    )
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clipped to this before each step")
    divergence_patience: int = Field(
        3,
        ge=0,
        description="optimizer steps in a row whose gradient or result is not finite (each skipped or undone:"
        " the weights stay the last finite ones) after which the run stops with status diverged (0: never)",
    )
    revert_on_drop: float = Field(
        0.0,
        ge=0,
        description="guard (off at 0): when a periodic evaluation of log.best_by falls this far below its "
        "best, the weights and optimizer go back to the best checkpoint and the KL weight is multiplied by "
        "revert_kl_factor (needs log.keep_best and eval.every)",
    )
    revert_kl_factor: float = Field(
        2.0, ge=1, description="what each revert multiplies the objective's KL weight to the reference by"
    )
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
    guidance: float = Field(
        1.0,
        ge=0.0,
        description="CFG scale of every evaluation of the trained policy (1: CFG-free, the default; a "
        "policy trained with CFG, like FlowGRPO as published, is evaluated with its scale)",
    )
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
        True,
        description="write a checkpoint at each periodic evaluation that beats the earlier ones and keep the "
        "best one (beside keep_checkpoints); summary.json's eval_best names it",
    )
    best_by: str | None = Field(
        None,
        description="the reward whose evaluation score picks the best checkpoint (keep_best, nft export "
        "--best, nft sample --best): a [[reward]] or [[eval.reward]] label, e.g. a held-out monitor reward "
        "that cannot be hacked (default: the first [[reward]])",
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


class RolloutConfig(_Strict):
    """`[rollout]`: how collection samples, apart from what training computes (docs/rollout.md)."""

    precision: Literal[REQUESTS] = Field(
        "auto",
        description="dtype of the policy's forward passes in collection (autocast): auto = train.precision's"
        " choice; a precision other than training's is a lossy lever",
    )
    levers: list[str] = Field(
        default_factory=list,
        description="registered rollout levers applied to collection (`nft plugins` lists them), e.g. "
        "compile, sdpa, cache; each declared lossless or lossy",
    )
    lever_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="`[rollout.lever_options.<name>]`: a lever's options, e.g. [rollout.lever_options.cache]"
        ' kind = "first-block"',
    )
    scout_candidates: int = Field(
        1,
        ge=1,
        description="scout rollouts (Sol-RL, arXiv 2604.06916): sample this many times "
        "data.images_per_prompt candidates per prompt with the levers, score them, and regenerate exactly "
        "(no lossy lever) the images_per_prompt whose advantages are largest in size; 1: off",
    )


class AlarmConfig(_Strict):
    """`[alarms]`: warnings on the ways NFT runs go wrong quietly (docs/guards.md). Each fires once when
    its condition starts to hold: a warning line, an `alarm` record in metrics.jsonl, a mark on the
    curves, a section of the report and a tracker scalar `alarm/<name>`. They never change training."""

    enabled: bool = Field(
        True, description="watch the run with the alarms below (two small forwards every probe_every epochs)"
    )
    probe_every: int = Field(
        5,
        ge=1,
        description="velocity_inflation: measure the velocity-norm ratio every this many epochs (and at the"
        " first); each probe is one current and one reference forward over 8 samples",
    )
    gap_floor: float = Field(
        1e-7, ge=0, description="stalled_gap: mean |v - v_old| below this counts as no gap (NFT degenerates)"
    )
    gap_epochs: int = Field(3, ge=1, description="stalled_gap: epochs in a row without a gap before it fires")
    norm_ratio: float = Field(
        1.2,
        gt=1,
        description="velocity_inflation: fires when the trained velocity's norm exceeds this multiple of the"
        " reference's on the same inputs (NormGuard, arXiv 2606.27771, saw 5-15 % inflation with drift)",
    )
    hacking_drop: float = Field(
        0.05,
        gt=0,
        description="reward_hacking: fires when a monitor reward ([[eval.reward]]) is this far below its best"
        " evaluation while the trained reward is not below its value then",
    )
    collapse_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="diversity_collapse: fires when a monitor/* value falls below this fraction of its start",
    )
    collapse_window: int = Field(
        3, ge=1, description="diversity_collapse: epochs averaged at the start and at the end"
    )
    excluded_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="excluded_samples: fires above this share of samples without a valid score",
    )
    skipped_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="excluded_samples: fires above this share of optimizer steps skipped or undone",
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
    rollout: RolloutConfig = Field(
        default_factory=RolloutConfig, description="`[rollout]`: rollout precision, levers, scout rollouts"
    )
    alarms: AlarmConfig = Field(
        default_factory=AlarmConfig, description="`[alarms]`: warnings on collapse, hacking and stalls"
    )
    reward: list[RewardConfig] = Field(
        min_length=1, description="`[[reward]]`: the trained rewards (one or more), summed by weight"
    )

    @field_validator("name")
    @classmethod
    def _name_stays_under_out(cls, value: str) -> str:
        if not value.strip() or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
            raise ValueError(
                "must be a plain folder name under --out (not empty, not . or .., no / or \\), e.g. "
                '"sd3-pickscore"'
            )
        return value

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
        if self.log.best_by is not None and self.log.best_by not in seen:
            allowed = ", ".join(sorted(seen))
            raise ValueError(f"log.best_by: {self.log.best_by!r} is not a reward's label; allowed: {allowed}")
        if self.train.revert_on_drop and not (self.log.keep_best and self.eval.every):
            raise ValueError(
                "train.revert_on_drop: reverting needs the best checkpoint: set log.keep_best = true and "
                "eval.every > 0"
            )
        if all(reward.weight == 0 for reward in self.reward):
            raise ValueError("reward: every weight is 0, so nothing would be trained; give one a weight")
        return self
