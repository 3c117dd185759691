"""The concepts page's figure, drawn with matplotlib from the code's own formulas: the implicit positive
and negative policies, the optimality probability r(A) and the old-policy decay schedules."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nft_core.advantages import optimality_probability
from nft_core.schedules import parse_decay_schedule

PATH = "figures/nft-concepts.svg"
"""Where the figure lies in the site (the concepts page links it)."""

V_OLD = np.array([1.0, 1.0])
V_CURRENT = np.array([1.8, 1.4])
TARGET = np.array([1.7, 2.4])
"""A schematic velocity plane at one (x_t, t): the old and current predictions and one sample's
flow-matching target eps - x0. Only the positions of v+ and v- are computed (from the objective's
definition); the three points are chosen to be readable."""


def implicit_policies(v_old: np.ndarray, v: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """`v+ = (1 - beta) v_old + beta v` and `v- = (1 + beta) v_old - beta v`."""
    return (1 - beta) * v_old + beta * v, (1 + beta) * v_old - beta * v


def _policies_panel(axis: Axes) -> None:
    far_positive, far_negative = implicit_policies(V_OLD, V_CURRENT, 1.3)  # the line they all lie on
    axis.plot(*np.stack([far_negative, far_positive]).T, color="0.75", linestyle="--", linewidth=1, zorder=1)
    for beta, marker in ((1.0, "o"), (0.5, "s")):
        positive, negative = implicit_policies(V_OLD, V_CURRENT, beta)
        axis.scatter(*positive, color="tab:green", marker=marker, zorder=3, label=f"v+ (beta = {beta:g})")
        axis.scatter(*negative, color="tab:red", marker=marker, zorder=3, label=f"v- (beta = {beta:g})")
    axis.scatter(*V_OLD, color="black", zorder=4)
    axis.annotate("v_old", V_OLD, textcoords="offset points", xytext=(-34, 4))
    axis.annotate("v = v+ (beta 1)", V_CURRENT, textcoords="offset points", xytext=(-8, 9))
    axis.scatter(*TARGET, color="tab:blue", marker="*", s=160, zorder=4)
    axis.annotate("target eps - x0", TARGET, textcoords="offset points", xytext=(9, -3))
    positive, negative = implicit_policies(V_OLD, V_CURRENT, 1.0)
    arrow = {"arrowstyle": "->", "linewidth": 1.2}
    axis.annotate("", TARGET, positive, arrowprops={**arrow, "color": "tab:green"})
    axis.annotate("", TARGET, negative, arrowprops={**arrow, "color": "tab:red"})
    explanation = "r = 1: pull v+ to the target\nr = 0: pull v- to it (v moves away)"
    axis.text(0.97, 0.03, explanation, ha="right", va="bottom", transform=axis.transAxes, fontsize=8)
    axis.set_title("implicit policies at one (x_t, t)", fontsize=10)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_aspect("equal", adjustable="datalim")
    axis.legend(fontsize=7, loc="upper left", frameon=False)


def _optimality_panel(axis: Axes, adv_clip: float = 5.0) -> None:
    advantages = torch.linspace(-2 * adv_clip, 2 * adv_clip, 401, dtype=torch.float64)
    r = optimality_probability(advantages, adv_clip)
    axis.plot(advantages.numpy(), r.numpy(), color="tab:purple")
    axis.axhline(0.5, color="0.75", linewidth=1, linestyle="--")
    for bound in (-adv_clip, adv_clip):
        axis.axvline(bound, color="0.85", linewidth=1)
    axis.set_xlabel("advantage A (per prompt group)")
    axis.set_ylabel("optimality r")
    axis.set_title(f"r = clamp(A / A_max / 2 + 1/2, 0, 1), A_max = {adv_clip:g}", fontsize=10)


def _decay_panel(axis: Axes, steps: int = 600) -> None:
    grid = np.arange(steps + 1)
    for spec, label in (
        ("type1", "type1 = linear-0.001-0.5 (default)"),
        ("type2", "type2 = delayed-75-0.0075-0.999"),
    ):
        schedule = parse_decay_schedule(spec)
        axis.plot(grid, [schedule(int(step)) for step in grid], label=label)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("d")
    axis.set_ylim(-0.03, 1.03)
    axis.set_title("old <- d old + (1 - d) theta after each epoch", fontsize=10)
    axis.legend(fontsize=7, loc="lower right", frameon=False)


def concepts_figure() -> bytes:
    """The figure as SVG bytes (text drawn as paths, no date: the same bytes on every build)."""
    # the object API, not pyplot: no backend or display is chosen, nothing global is left behind
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "nft-docs", "font.size": 8}):
        figure = Figure(figsize=(11, 3.4))
        axes = figure.subplots(1, 3)
        _policies_panel(axes[0])
        _optimality_panel(axes[1])
        _decay_panel(axes[2])
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()
