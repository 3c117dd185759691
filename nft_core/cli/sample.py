"""`nft sample CHECKPOINT --prompts FILE --out DIR`: images from a trained checkpoint, ready to be scored.

Works for any policy: the run's `config.resolved.toml` names the policy and its options, the checkpoint
folder holds what `save_trainable` wrote (EMA weights). Output layouts:

* GenEval metadata (`.jsonl` with `tag` / `include`, or `geneval:...`): GenEval's own layout
  `<out>/<index:05d>/metadata.jsonl` + `<out>/<index:05d>/samples/<k:05d>.png`, for `nft eval REWARD`;
* plain prompts: `<out>/<index:05d>-<k>.png` and `<out>/prompts.txt` (one line per image, in file-name
  order), for `nft score REWARD --images <out> --prompts <out>/prompts.txt`.

The noise of image `j` depends only on `(seed, j)` (as in training-time evaluation), so two checkpoints
sampled with the same seed are compared on the same noise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nft_core.errors import UserError
from nft_core.types import PromptItem

STEP_FOLDER = re.compile(r"step_(\d+)$")


@dataclass
class SampleRequest:
    """What to sample: the checkpoint (None = the base model), the run config and the sampling knobs."""

    checkpoint: Path | None
    config: Path
    prompts: str
    out: Path
    images_per_prompt: int = 1
    solver: str | None = None
    steps: int | None = None
    guidance: float = 1.0
    seed: int = 0
    batch_size: int = 8
    device: str | None = None
    overrides: tuple[str, ...] = ()


def latest_checkpoint(run_dir: Path, best: bool = False) -> Path:
    """The newest complete `checkpoints/step_XXXXX` of a run folder (a half-written one never counts), or
    with `best` the one of its best evaluation (`log.best_by`)."""
    from nft_core.state.checkpoints import best_checkpoint
    from nft_core.state.checkpoints import latest_checkpoint as newest

    found = best_checkpoint(run_dir) if best else newest(run_dir)
    if found is None:
        if best:
            raise UserError(f"{run_dir}: no checkpoint holds an evaluation score (evaluations write them)")
        raise UserError(f"{run_dir}: no complete checkpoints/step_XXXXX folder")
    return found


def resolve_source(source: Path, config: Path | None, best: bool = False) -> tuple[Path | None, Path]:
    """(checkpoint folder or None, run config) for a checkpoint folder, a run folder (its newest
    checkpoint, or with `best` its best one) or a config file."""
    if source.is_file() and source.suffix == ".toml":
        return None, config or source
    if not source.exists():
        raise UserError(f"{source}: no such checkpoint folder, run folder or .toml run config")
    if not source.is_dir():
        raise UserError(f"{source}: not a checkpoint folder, a run folder or a .toml run config")
    if best and not (source / "checkpoints").is_dir():
        raise UserError(f"--best {source}: give a run folder (it picks the run's best checkpoint)")
    if (source / "checkpoints").is_dir():
        checkpoint, run_dir = latest_checkpoint(source, best), source
    elif config is None and not STEP_FOLDER.search(source.name):
        raise UserError(
            f"{source}: neither a run folder (it has no checkpoints/) nor a checkpoint folder "
            "(checkpoints/step_XXXXX of a run); for other saved weights pass --config RUN.toml"
        )
    else:
        checkpoint, run_dir = source, source.parent.parent
    if config is not None and not config.is_file():
        raise UserError(f"--config {config}: config file not found")
    resolved = config or run_dir / "config.resolved.toml"
    if not resolved.is_file():
        raise UserError(f"{checkpoint}: no run config at {resolved}; pass --config RUN.toml")
    return checkpoint, resolved


def is_geneval(items: list[PromptItem]) -> bool:
    """True when every item carries GenEval metadata (a tag and include clauses)."""
    return all(item.metadata.get("tag") and item.metadata.get("include") for item in items)


def _solver(config: Any, name: str | None, steps: int | None):
    from nft_core import registry

    base = config.eval.solver
    options: dict[str, Any] = base.options() if name in (None, base.name) else {}
    if name not in (None, base.name) and "shift" in base.options():
        options["shift"] = base.options()["shift"]
    if steps is not None:
        options["steps"] = steps
    return registry.create("solvers", name or base.name, options, "--solver")


def _save_png(image, path: Path) -> None:
    from PIL import Image

    array = (image.float() * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def sample_images(request: SampleRequest, echo=print) -> dict[str, Any]:
    """Build the policy of the run, load the checkpoint, sample every prompt, write the images."""
    from tqdm import tqdm

    from nft_core import registry
    from nft_core.config import load_config
    from nft_core.io import check_output_folder
    from nft_core.loop.preflight import check_device
    from nft_core.loop.prompts import load_prompts
    from nft_core.sampling import noise_for, sample_latents

    if request.out.exists() and not request.out.is_dir():
        raise UserError(f"--out {request.out}: a file, not a folder")
    if request.out.exists() and any(request.out.iterdir()):
        raise UserError(f"--out {request.out} is not empty (stale images would be scored with the new ones)")
    check_output_folder(request.out)  # before any model loads
    config = load_config(request.config, list(request.overrides))
    items = load_prompts(request.prompts, "--prompts")
    solver = _solver(config, request.solver, request.steps)
    device = check_device(
        request.device or config.train.device, "--device" if request.device else "train.device"
    )
    policy = registry.create("policies", config.policy.name, config.policy.options(), "policy")
    policy.to(device)
    if request.checkpoint is not None:
        policy.load_trainable(str(request.checkpoint))
    policy.train(False)
    geneval, per = is_geneval(items), request.images_per_prompt
    width = max(1, len(str(per - 1)))
    jobs = [(i, k) for i in range(len(items)) for k in range(per)]
    names: list[str] = []
    request.out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(jobs), desc="sample", unit="img", leave=False)
    for start in range(0, len(jobs), request.batch_size):
        batch = jobs[start : start + request.batch_size]
        indices = list(range(start, start + len(batch)))
        noise = noise_for(indices, tuple(policy.latent_shape), request.seed).to(device)
        cond = policy.encode_prompts([items[i].prompt for i, _ in batch])
        latents = sample_latents(
            policy, solver, cond, noise, view="current", guidance=request.guidance, batch_size=len(batch)
        )
        images = policy.decode(latents).cpu()
        for (i, k), image in zip(batch, images, strict=True):
            if geneval:
                folder = request.out / f"{i:05d}"
                if k == 0:
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / "metadata.jsonl").write_text(
                        json.dumps(items[i].metadata) + "\n", encoding="utf-8"
                    )
                _save_png(image, folder / "samples" / f"{k:05d}.png")
            else:
                name = f"{i:05d}-{k:0{width}d}.png"
                _save_png(image, request.out / name)
                names.append(items[i].prompt)
        bar.update(len(batch))
    bar.close()
    if not geneval:
        (request.out / "prompts.txt").write_text("".join(p + "\n" for p in names), encoding="utf-8")
    summary = {
        "checkpoint": str(request.checkpoint) if request.checkpoint else None,
        "config": str(request.config),
        "policy": config.policy.name,
        "prompts": request.prompts,
        "images": len(jobs),
        "images_per_prompt": per,
        "layout": "geneval" if geneval else "flat",
        "solver": repr(solver),
        "guidance": request.guidance,
        "seed": request.seed,
    }
    (request.out / "sample.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    hint = (
        f"`nft eval geneval --images {request.out}` (shapes world: `nft eval shapes-geneval`)"
        if geneval
        else f"`nft score REWARD --images {request.out} --prompts {request.out / 'prompts.txt'}`"
    )
    echo(f"wrote {len(jobs)} images to {request.out} ({summary['layout']} layout); score them with {hint}")
    return summary


def add_sample_command(app) -> None:
    """Register `nft sample` on the Typer app."""
    import typer

    @app.command("sample")
    def sample_command(
        checkpoint: Path = typer.Argument(
            ..., help="checkpoint folder, run folder (its latest checkpoint) or a run .toml (the base model)"
        ),
        prompts: str = typer.Option(
            ..., "--prompts", help="prompt file (.txt, GenEval .jsonl) or source:arg"
        ),
        out: Path = typer.Option(..., "--out", help="output folder (must be empty or new)"),
        config: Path | None = typer.Option(
            None, "--config", help="run config (default: the run's resolved one)"
        ),
        images_per_prompt: int = typer.Option(1, "--images-per-prompt", "-n", min=1),
        solver: str | None = typer.Option(
            None, "--solver", help="solver (default: the config's eval solver)"
        ),
        steps: int | None = typer.Option(None, "--steps", min=1, help="solver steps"),
        guidance: float = typer.Option(1.0, "--guidance", help="classifier-free guidance scale (1 = off)"),
        seed: int = typer.Option(0, "--seed"),
        batch_size: int = typer.Option(8, "--batch-size", min=1),
        device: str | None = typer.Option(None, "--device", help="default: the config's train.device"),
        set_: list[str] = typer.Option([], "--set", help="config override KEY=VALUE, repeatable"),
        best: bool = typer.Option(
            False, "--best", help="a run folder's best checkpoint (its best evaluation by log.best_by)"
        ),
    ) -> None:
        """Sample images from a checkpoint into a folder that `nft score` / `nft eval` read."""
        knobs = (images_per_prompt, solver, steps, guidance, seed, batch_size, device, tuple(set_))
        try:
            request = SampleRequest(*resolve_source(checkpoint, config, best), prompts, out, *knobs)
            sample_images(request, echo=typer.echo)
        except UserError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None


__all__ = [
    "SampleRequest",
    "add_sample_command",
    "is_geneval",
    "latest_checkpoint",
    "resolve_source",
    "sample_images",
]
