"""GenEval's printed summary (`summary_scores.py`): image and prompt accuracy, per task, the overall score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nft_rewards.geneval.scoring import TAGS

__all__ = ["summary_report"]


def summary_report(
    summary: dict[str, Any], tags: Sequence[str], correct: Sequence[bool | float], prompts: Sequence[str]
) -> str:
    """The official summary of one evaluation from its `official_score` table and per-image values:
    a prompt counts as correct when any of its images is."""
    by_prompt: dict[str, bool] = {}
    for prompt, value in zip(prompts, correct, strict=True):
        by_prompt[prompt] = by_prompt.get(prompt, False) or bool(value)
    lines = [
        "Summary",
        "=======",
        f"Total images: {len(correct)}",
        f"Total prompts: {len(by_prompt)}",
        f"% correct images: {summary['image_accuracy']:.2%}",
        f"% correct prompts: {sum(by_prompt.values()) / len(by_prompt):.2%}",
        "",
        "Task breakdown",
        "==============",
    ]
    for tag in TAGS:
        if tag in summary["per_tag"]:
            hits = sum(float(value) for value, t in zip(correct, tags, strict=True) if t == tag)
            lines.append(
                f"{tag:<16} = {summary['per_tag'][tag]:.2%} ({int(hits)} / {summary['counts'][tag]})"
            )
    lines += ["", f"Overall score (avg. over tasks): {summary['overall']:.5f}"]
    if summary["missing_tags"]:
        lines.append(
            f"(tasks missing: {', '.join(summary['missing_tags'])}: not comparable to published scores)"
        )
    return "\n".join(lines)
