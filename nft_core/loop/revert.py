"""The revert guard: a held-out score that falls sends the weights back to the best checkpoint.

`train.revert_on_drop = d > 0` (opt-in): after a periodic evaluation whose `log.best_by` score is `d` or
more below the best so far, the trained, old and EMA weights and the optimizer's state are put back as the
best checkpoint (`log.keep_best`) holds them, and the objective's KL weight to the reference is multiplied
by `train.revert_kl_factor`, so that the run does not walk down the same slope at once. The epochs, the
prompts, the learning-rate schedule and the records go on. It is what a practitioner does by hand when a
held-out monitor shows a reward being hacked: roll back and anchor harder. The weights of the evaluation
before training are not a checkpoint: a run that is worse than its base from its first evaluation on goes
back to that first evaluation's checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nft_core.config import RunConfig

__all__ = ["REVERTED_HOLDERS", "Reverter"]

REVERTED_HOLDERS = ("current", "old", "ema", "optimizer", "scaler")
"""The checkpoint holders a revert loads: the weights and the optimizer's state, nothing that counts."""


class Reverter:
    """Watches the evaluations of `log.best_by` and reverts to the best checkpoint on a fall (a holder of
    the run state: the KL factor and the reverts so far are checkpointed)."""

    def __init__(
        self,
        config: RunConfig,
        objective: Any,
        restore: Callable[[Path, tuple[str, ...]], Any],
        echo: Callable[[str], None],
    ) -> None:
        self.drop, self.factor = config.train.revert_on_drop, config.train.revert_kl_factor
        self.objective, self.restore, self.echo = objective, restore, echo
        self.base_kl = float(getattr(objective, "kl_weight", 0.0))
        self.kl_factor = 1.0
        self.reverts = 0

    def after_epoch(self, outputs: Any, evaluated: bool) -> None:
        """After an epoch with a periodic evaluation: revert on a fall, and log a `revert` record."""
        if not evaluated or not self.drop:
            return
        fields = self.after_eval(outputs.eval_score_now(), outputs.best)
        if fields is not None:
            counters = outputs.counters
            position = {"epoch": counters.epoch, "step": counters.global_step}
            outputs.log(
                {"kind": "revert", **position, "train_minutes": counters.train_seconds / 60, **fields}
            )

    def after_eval(self, score: float | None, best: dict[str, Any] | None) -> dict[str, Any] | None:
        """Revert when `score` is `drop` or more below `best` (the observer's best: score, epoch,
        checkpoint); returns the `revert` record's fields, or None."""
        if not self.drop or score is None or not best or not best.get("checkpoint"):
            return None
        if best["score"] - score < self.drop:
            return None
        self.restore(Path(best["checkpoint"]), REVERTED_HOLDERS)
        self.reverts += 1
        self.kl_factor *= self.factor
        self._apply()
        self.echo(
            f"guard: {best['reward']} fell to {score:.3f}, {best['score'] - score:.3f} below its best "
            f"{best['score']:.3f} (epoch {best['epoch']}): reverted to {best['checkpoint']}, KL weight now "
            f"{self.base_kl * self.kl_factor:g}"
        )
        return {
            "revert/from_score": score,
            "revert/to_epoch": best["epoch"],
            "revert/kl_weight": self.base_kl * self.kl_factor,
            "revert/count": self.reverts,
        }

    def _apply(self) -> None:
        if hasattr(self.objective, "kl_weight"):
            self.objective.kl_weight = self.base_kl * self.kl_factor

    def state_dict(self) -> dict[str, Any]:
        return {"kl_factor": self.kl_factor, "reverts": self.reverts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kl_factor, self.reverts = float(state["kl_factor"]), int(state["reverts"])
        self._apply()
