"""Everything a run shows a person, in one observer: metrics.jsonl, sample grids, curves, summary.json,
evaluation lines and their cadence, the monitors of each epoch's samples, the trackers and the report.

The trainer tells it what happened (`on_start`, `on_epoch`, `on_eval`, `on_finish`, `on_failure`); it
decides what gets written and when. Rank 0 writes; every rank calls it (the monitors gather over ranks).
Its position (how many metrics lines were written, the summary so far) is part of a checkpoint
(`state_dict`), so a resumed run cuts metrics.jsonl back to its checkpoint and goes on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w
import torch

from nft_core import registry
from nft_core.config import RunConfig
from nft_core.distributed import Distributed
from nft_core.io import append_jsonl, atomic_write_json, atomic_write_text
from nft_core.loop.conditions import with_sources
from nft_core.outputs.alarms import AlarmSettings, check_alarms
from nft_core.outputs.metrics import eval_record
from nft_core.outputs.tracking import Trackers
from nft_core.outputs.visuals import (
    VIDEO_FPS,
    beside_sources,
    plot_curves,
    sample_grid,
    spread_over_tags,
    total_reward_legend,
)
from nft_core.protocols import Monitor
from nft_core.reward_set import RewardSet, RewardSetOutput
from nft_core.state.run_state import Counters
from nft_core.types import EvalResult, PromptItem, Samples

__all__ = ["Outputs", "video_fps"]

PHASES = ("sampling", "reward", "training")
"""The timed phases of an epoch (`seconds/<phase>` in metrics.jsonl); training includes the refresh."""


class Outputs:
    """The run directory's files and the trackers, fed by the trainer's events."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        dist: Distributed,
        counters: Counters,
        rewards: RewardSet,
        eval_items: list[PromptItem],
        monitors: list[Monitor],
        trackers: Trackers,
        echo: Callable[[str], Any],
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.dist = dist
        self.counters = counters
        self.rewards = rewards
        self.eval_items = eval_items
        self.monitors = monitors
        self.trackers = trackers
        self.echo = echo
        self.records: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {"run_dir": str(run_dir)}
        self.alarm_settings = AlarmSettings.of(config)
        self.alarms_holding: set[str] = set()
        self.best_by = config.log.best_by or config.reward[0].label
        self.best: dict[str, Any] | None = None
        """The best evaluation so far by `log.best_by`: reward, score, epoch, label, checkpoint."""

    # ---- the run's position, saved in checkpoints --------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"metrics_lines": len(self.records), "summary": self.summary, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Cut metrics.jsonl back to the lines written up to the checkpoint and take its summary."""
        self.records = self._metrics_until(int(state["metrics_lines"]))
        self.summary = dict(state["summary"], run_dir=str(self.run_dir))
        self.best = state.get("best")
        self.alarms_holding = set(check_alarms(self.records, self.alarm_settings))

    def _metrics_until(self, lines: int) -> list[dict[str, Any]]:
        """The first `lines` records of metrics.jsonl, which is rewritten to hold only them."""
        path = self.run_dir / "metrics.jsonl"
        kept = path.read_text(encoding="utf-8").splitlines()[:lines] if path.is_file() else []
        if len(kept) < lines:
            self.echo(f"warning: {path} holds {len(kept)} of the {lines} lines the checkpoint saw")
        if self.dist.is_main:
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        self.dist.barrier()
        return [json.loads(line) for line in kept]

    # ---- events ----------------------------------------------------------------------------------
    def write_config(self, resolved: dict[str, Any]) -> None:
        """`config.resolved.toml` (rank 0): the config as the run resolved it."""
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.resolved.toml", tomli_w.dumps(resolved))

    def log(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record (rank 0 writes it and sends it to the trackers)."""
        self.records.append(record)
        if self.dist.is_main:
            append_jsonl(self.run_dir / "metrics.jsonl", record)
            self.trackers.log(record)

    def on_epoch(self, record: dict[str, Any], samples: Samples, scored: RewardSetOutput) -> None:
        """An epoch's record (with its monitors) and, at `log.grid_every`, its sample grid."""
        record.update(self.watch(samples))
        self.log(record)
        self.sound_alarms()
        epoch, every = self.counters.epoch, self.config.log.grid_every
        if every and epoch % every == 0:
            grid = f"epoch_{epoch:04d}"
            self.write_grid(grid, samples.images, samples.prompts, scored.total, metadata=samples.metadata)

    def warn_failed_rewards(self, scored: RewardSetOutput) -> None:
        """One warning line per reward whose calls raised this epoch, and what became of its samples."""
        for name, error in scored.errors.items():
            consequence = ""
            if scored.failed_calls[name] > 1:
                optional = name in scored.left_out
                consequence = "; left out of this epoch's total" if optional else "; its samples are excluded"
            self.echo(
                f"warning: epoch {self.counters.epoch}: reward {name!r} raised {scored.failed_calls[name]} "
                f"time(s), last: {error}{consequence}"
            )

    def sound_alarms(self) -> None:
        """Fire each alarm whose condition starts to hold (`nft_core.outputs.alarms`): a warning line and an
        `alarm` record (metrics.jsonl and the trackers); the curves and the report show them."""
        if not self.config.alarms.enabled:
            return
        holding = check_alarms(self.records, self.alarm_settings)
        counters = self.counters
        for name, message in holding.items():
            if name in self.alarms_holding:
                continue
            self.echo(f"warning: alarm {name} at epoch {counters.epoch}: {message}")
            self.log(
                {
                    "kind": "alarm",
                    "name": name,
                    "message": message,
                    "epoch": counters.epoch,
                    "step": counters.global_step,
                    "train_minutes": counters.train_seconds / 60,
                    f"alarm/{name}": 1,
                }
            )
        self.alarms_holding = set(holding)

    def eval_due(self, epoch: int, last: bool) -> bool:
        """Whether a periodic evaluation follows `epoch` (`eval.every`; the final one comes at the end)."""
        every = self.config.eval.every
        return bool(every) and (epoch + 1) % every == 0 and not last

    def show_eval(self, label: str, result: EvalResult) -> None:
        """One line per reward of an evaluation: its score and per-tag table."""
        for name, entry in result.scores.items():
            table = "  ".join(f"{tag} {value:.2f}" for tag, value in result.per_tag[name].items())
            failed = f"  (failed twice: {entry['error']})" if "error" in entry else ""
            self.echo(f"[eval {label}] {name}: {entry['score']:.3f}  {table}{failed}")

    def on_eval(self, label: str, result: EvalResult, grid: str | None = None) -> bool:
        """Log an evaluation's record and, named `grid`, draw its images; a periodic one (no grid)
        redraws the curves. Returns whether it is the best so far by `log.best_by` (not for `before`)."""
        counters = self.counters
        self.log(eval_record(result, label, counters.epoch, counters.global_step, counters.train_seconds))
        self.sound_alarms()
        if grid is not None:
            self.grid_from_eval(grid, result)
        else:
            self.plot_curves()
        score = result.scores.get(self.best_by, {}).get("score")
        if label == "before" or not isinstance(score, float) or not math.isfinite(score):
            return False
        if self.best is not None and score <= self.best["score"]:
            return False
        self.best = {"reward": self.best_by, "score": score, "epoch": counters.epoch, "label": label}
        return True

    def eval_score_now(self) -> float | None:
        """The `log.best_by` reward's score of an evaluation made at this epoch, if one was (`keep_best`)."""
        name = self.best_by
        for record in reversed(self.records):
            if (
                record["kind"] == "eval"
                and record["epoch"] == self.counters.epoch
                and record["label"] != "before"
            ):
                return record.get(f"eval/{name}/score")
        return None

    def write_summary(self, status: str, **fields: Any) -> dict[str, Any]:
        """`summary.json` with `status` (running, finished, interrupted, failed) and `fields` added."""
        self.summary.update(status=status, **fields)
        if self.dist.is_main:
            atomic_write_json(self.run_dir / "summary.json", self.summary)
        return self.summary

    def on_finish(self, **fields: Any) -> dict[str, Any]:
        """The curves, `summary.json` with status `finished` and `fields`, and the report."""
        self.plot_curves()
        epochs = self.counters.epoch + 1
        seconds = self.counters.seconds
        summary = self.write_summary(
            "finished",
            **fields,
            eval_best=self.best,
            seconds_per_phase=dict(seconds),
            seconds_per_epoch={phase: seconds.get(phase, 0.0) / epochs for phase in PHASES},
        )
        if self.dist.is_main:  # a failure to write it is a warning line, never a failed run
            from nft_core.outputs.report import write_report_after_run

            write_report_after_run(self.run_dir, self.echo)
        return summary

    def on_diverged(self, reason: str, checkpoint: Path | None) -> dict[str, Any]:
        """The run stopped because it diverged: a line, the curves, `summary.json` with status `diverged`
        and the last good checkpoint (None when no step was taken), the report."""
        epoch = self.counters.epoch
        where = (
            f"the last good checkpoint is {checkpoint}" if checkpoint else "there is no good state to save"
        )
        self.echo(f"diverged at epoch {epoch}: {reason}; {where}")
        self.plot_curves()
        summary = self.write_summary(
            "diverged",
            reason=reason,
            epoch=epoch,
            last_good_checkpoint=None if checkpoint is None else str(checkpoint),
        )
        if self.dist.is_main:
            from nft_core.outputs.report import write_report_after_run

            write_report_after_run(self.run_dir, self.echo)
        return summary

    def on_failure(self, error: BaseException, last_checkpoint: Path | None) -> None:
        """`summary.json` with status `failed` (or `interrupted` for Ctrl-C), the error and the last
        complete checkpoint; never raises itself (the original error is what the user must see)."""
        try:
            if not self.run_dir.is_dir():
                return
            stopped = isinstance(error, KeyboardInterrupt)
            self.write_summary(
                "interrupted" if stopped else "failed",
                error=f"{type(error).__name__}: {error}"[:2000],
                epoch=self.counters.epoch,
                last_checkpoint=None if last_checkpoint is None else str(last_checkpoint),
            )
        except Exception as problem:  # e.g. the disk is full: say so, keep the original error
            self.echo(f"warning: could not write {self.run_dir / 'summary.json'}: {problem}")

    # ---- what the events write ---------------------------------------------------------------------
    def plot_curves(self) -> None:
        if self.dist.is_main:
            plot_curves(self.records, self.run_dir / "curves.png")

    def watch(self, samples: Samples) -> dict[str, float]:
        """`monitor/<name>/<key>` of every `[log] monitors` entry on this epoch's samples. Each rank
        measures its own images (a prompt group split over two ranks counts as two groups); the ranks'
        values are averaged, NaN ones (nothing to measure) left out."""
        if not self.monitors:
            return {}
        local = samples.local
        assert local is not None
        mine = {
            f"monitor/{monitor.name}/{key}": value
            for monitor in self.monitors
            for key, value in monitor(
                samples.images, samples.prompts[local], samples.group_ids[local], samples.metadata[local]
            ).items()
        }
        parts = self.dist.gather_objects(mine) if self.dist.enabled else [mine]
        watched = {}
        for key in mine:
            values = [part[key] for part in parts if not math.isnan(part[key])]
            watched[key] = sum(values) / len(values) if values else math.nan
        return watched

    def grid_from_eval(self, name: str, result: EvalResult) -> None:
        """The grid of an evaluation's images, the tags taking turns, each captioned with the first
        reward's score."""
        first = self.rewards.terms[0].name
        prompts, tags = [i.prompt for i in self.eval_items], [i.metadata.get("tag") for i in self.eval_items]
        assert result.images is not None
        metadata = [item.metadata for item in self.eval_items]
        scores = result.per_image[first]
        self.write_grid(name, result.images, prompts, scores, tags=tags, label=first, metadata=metadata)

    def write_grid(
        self,
        name: str,
        images: torch.Tensor,
        prompts: list[str],
        scores: torch.Tensor,
        tags: list[str | None] | None = None,
        label: str | None = None,
        metadata: list[dict[str, Any]] | None = None,
    ) -> None:
        """A grid of up to `log.grid_images` of this rank's images (rank 0 writes), each captioned with its
        prompt and score. Without `tags` (training): the first images, the score their total reward, which
        the grid's title spells out. With `tags` (evaluation): the tags take turns (`spread_over_tags`) and
        the score is the reward named `label`. Editing results are shown beside their source images
        (`metadata`); videos make an animated GIF (`samples/<name>.gif`), which trackers get as a video."""
        if not self.dist.is_main:
            return
        shown = min(len(prompts), images.shape[0])
        count = min(self.config.log.grid_images, shown)
        if tags is None:
            chosen = list(range(count))
            normalizers = {reward.label: reward.normalize for reward in self.config.reward}
            terms = [(term.name, term.weight, normalizers[term.name]) for term in self.rewards.terms]
            title = total_reward_legend(terms)
            captions = [f"{prompts[i]}\ntotal {scores[i]:.2f}" for i in chosen]
        else:
            chosen = spread_over_tags(tags[:shown], prompts[:shown], count)
            title = f"{name}: {count} of {len(prompts)} images, tags taking turns; score = {label} per image"
            texts = [f"[{tags[i]}] {prompts[i]}" if tags[i] else prompts[i] for i in chosen]
            captions = [f"{text}\n{label} {scores[i]:.2f}" for text, i in zip(texts, chosen, strict=True)]
        shown_images = images[chosen]
        if metadata is not None:  # an edit beside its source (read for the shown ones only)
            picked = with_sources([PromptItem(prompts[i], metadata[i]) for i in chosen])
            shown_images = beside_sources(shown_images, [item.metadata for item in picked])
            if shown_images.shape[-1] != images.shape[-1]:
                title += " (left: the source image, right: the edit)"
        video = shown_images.ndim == 5
        path = self.run_dir / "samples" / f"{name}{'.gif' if video else '.png'}"
        animation = {"fps": video_fps(self.config)} if video else {}
        sample_grid(shown_images, captions, path, title=title, **animation)
        self.trackers.image(self.counters.epoch, path, animation.get("fps"))


def video_fps(config: RunConfig) -> float:
    """The frame rate videos play at: the policy's `fps` option (its default when unset), else 8."""
    options = registry.get("policies", config.policy.name, "policy.name").options
    declared = None if options is None else options.model_fields.get("fps")
    return float(config.policy.options().get("fps", declared.default if declared else VIDEO_FPS))
