"""`nft sample CHECKPOINT --prompts FILE --out DIR`: images from a trained checkpoint, ready to be scored.

Works for any policy: the run's `config.resolved.toml` names the policy and its options, the checkpoint
folder holds what `save_trainable` wrote (EMA weights). Output layouts:

* GenEval metadata (`.jsonl` with `tag` / `include`, or `geneval:...`): GenEval's own layout
  `<out>/<index:05d>/metadata.jsonl` + `<out>/<index:05d>/samples/<k:05d>.png`, for `nft eval REWARD`;
* plain prompts: `<out>/<index:05d>-<k>.png` and `<out>/prompts.txt` (one line per image, in file-name
  order), for `nft score REWARD --images <out> --prompts <out>/prompts.txt`.

The noise of image `j` depends only on `(seed, j)` (as in training-time evaluation), so two checkpoints
sampled with the same seed are compared on the same noise.

Each image is written under a temporary name and renamed, so a file with an image's name is whole.
`sample.json` records the request (checkpoint, config, prompts, solver, guidance, seed: what the
images depend on); a rerun of the same request into the same folder skips the images already there
and goes on, and another request into a folder that is not empty is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nft_core.errors import UserError
from nft_core.types import PromptItem

STEP_FOLDER = re.compile(r"step_(\d+)$")
SUMMARY_FILE = "sample.json"


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


def _save_png(image, path: Path, fps: float | None = None) -> None:
    """The image `[3, H, W]` in [0, 1] as a PNG (with `fps`, a video's frames `[F, 3, H, W]` as an
    animated PNG), written whole or not at all (temporary name, rename)."""
    from PIL import Image

    from nft_core.io import atomic_write_bytes

    frames = image if fps is not None else image[None]
    arrays = (frames.float() * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    pictures = [Image.fromarray(array) for array in arrays]
    animated = dict(save_all=True, append_images=pictures[1:], duration=1000 / (fps or 1), loop=0)
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="PNG", **(animated if fps is not None else {}))
    atomic_write_bytes(path, buffer.getvalue())


def verify_source(checkpoint: Path | None) -> None:
    """Refuse a checkpoint folder whose files differ from the digests its state.json records (one line
    naming the file); weights saved elsewhere (no state.json) and older checkpoints load unverified."""
    from nft_core.state.checkpoints import STATE_FILE, verify_checkpoint

    if checkpoint is not None and (checkpoint / STATE_FILE).is_file():
        verify_checkpoint(checkpoint)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def request_record(request: SampleRequest, items: list[PromptItem]) -> dict[str, Any]:
    """What the images of a request depend on (not the batch size or the device), as `sample.json`
    records it: a rerun into the same folder goes on only when this is the same."""
    from nft_core.state.checkpoints import STATE_FILE

    state = None if request.checkpoint is None else request.checkpoint / STATE_FILE
    prompts = json.dumps([[item.prompt, item.metadata] for item in items], sort_keys=True, default=str)
    return {
        "checkpoint": None if request.checkpoint is None else str(request.checkpoint.resolve()),
        "checkpoint_state_sha256": _sha256(state.read_bytes()) if state and state.is_file() else None,
        "config": str(request.config.resolve()),
        "config_sha256": _sha256(request.config.read_bytes()),
        "overrides": list(request.overrides),
        "prompts": request.prompts,
        "prompts_sha256": _sha256(prompts.encode("utf-8")),
        "images_per_prompt": request.images_per_prompt,
        "solver": request.solver,
        "steps": request.steps,
        "guidance": request.guidance,
        "seed": request.seed,
    }


def _check_out(out: Path, request: dict[str, Any]) -> bool:
    """Whether `out` holds images of this same request to go on with (False: new or empty); a UserError
    when it is a file or holds anything else."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: a file, not a folder")
    if not out.exists() or not any(out.iterdir()):
        return False
    try:
        earlier = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8")).get("request")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if not isinstance(earlier, dict):
        raise UserError(
            f"--out {out} is not empty and holds no {SUMMARY_FILE} of an `nft sample` request (stale images "
            "would be scored with the new ones); give a new or empty folder"
        )
    differing = [
        key for key in sorted(request.keys() | earlier.keys()) if request.get(key) != earlier.get(key)
    ]
    if differing:
        shown = ", ".join(
            f"{key} ({earlier.get(key)!r} -> {request.get(key)!r})"
            if not key.endswith("sha256")
            else f"{key.removesuffix('_sha256')} (its content changed)"
            for key in differing
        )
        raise UserError(
            f"--out {out} holds the images of another request (it differs in {shown}); give a new or empty "
            "folder, or rerun the same request to go on with it"
        )
    return True


def _tidy(out: Path) -> None:
    """Remove the temporary files of images whose writing a kill interrupted."""
    for leftover in out.rglob(".*.tmp"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


def sample_images(request: SampleRequest, echo=print) -> dict[str, Any]:
    """Build the policy of the run, load the checkpoint, sample every prompt, write the images; into a
    folder that already holds some images of the same request, only the missing ones."""
    from tqdm import tqdm

    from nft_core import registry
    from nft_core.config import load_config
    from nft_core.io import atomic_write_json, atomic_write_text, check_output_folder
    from nft_core.loop.conditions import encode_items, with_sources
    from nft_core.loop.preflight import check_device
    from nft_core.loop.prompts import load_prompts
    from nft_core.outputs.observer import video_fps
    from nft_core.sampling import noise_for, sample_latents

    if request.out.exists() and not request.out.is_dir():
        raise UserError(f"--out {request.out}: a file, not a folder")
    config = load_config(request.config, list(request.overrides))
    items = load_prompts(request.prompts, "--prompts")
    record = request_record(request, items)
    going_on = _check_out(request.out, record)
    check_output_folder(request.out)  # before any model loads
    verify_source(request.checkpoint)
    solver = _solver(config, request.solver, request.steps)
    device = check_device(
        request.device or config.train.device, "--device" if request.device else "train.device"
    )
    geneval, per = is_geneval(items), request.images_per_prompt
    width = max(1, len(str(per - 1)))
    jobs = [(i, k) for i in range(len(items)) for k in range(per)]
    fps = video_fps(config)  # a video policy's samples are animated PNGs

    def target(i: int, k: int) -> Path:
        if geneval:
            return request.out / f"{i:05d}" / "samples" / f"{k:05d}.png"
        return request.out / f"{i:05d}-{k:0{width}d}.png"

    if going_on:
        _tidy(request.out)
    pending = [j for j, (i, k) in enumerate(jobs) if not target(i, k).is_file()]
    if going_on:
        echo(f"{request.out}: {len(jobs) - len(pending)} of {len(jobs)} images are there; sampling the rest")
    if pending:
        policy = registry.create("policies", config.policy.name, config.policy.options(), "policy")
        policy.to(device)
        if request.checkpoint is not None:
            policy.load_trainable(str(request.checkpoint))
        policy.train(False)
        atomic_write_json(request.out / SUMMARY_FILE, {"request": record, "status": "running"})
        bar = tqdm(total=len(pending), desc="sample", unit="img", leave=False)
        for start in range(0, len(pending), request.batch_size):
            indices = pending[start : start + request.batch_size]
            batch = [jobs[j] for j in indices]
            noise = noise_for(indices, tuple(policy.latent_shape), request.seed).to(device)
            cond = encode_items(policy, with_sources([items[i] for i, _ in batch]))
            latents = sample_latents(
                policy, solver, cond, noise, view="current", guidance=request.guidance, batch_size=len(batch)
            )
            images = policy.decode(latents).cpu()
            for (i, k), image in zip(batch, images, strict=True):
                metadata = request.out / f"{i:05d}" / "metadata.jsonl"
                if geneval and not metadata.is_file():
                    atomic_write_text(metadata, json.dumps(items[i].metadata) + "\n")
                if image.ndim == 4:  # a video's frames
                    _save_png(image, target(i, k), fps)
                else:
                    _save_png(image, target(i, k))
            bar.update(len(batch))
        bar.close()
    if not geneval:
        names = [items[i].prompt for i, _ in jobs]
        atomic_write_text(request.out / "prompts.txt", "".join(p + "\n" for p in names))
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
    atomic_write_json(request.out / SUMMARY_FILE, {**summary, "request": record, "status": "finished"})
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
        out: Path = typer.Option(
            ...,
            "--out",
            help="output folder: new, empty, or one an interrupted run of the same request wrote into (it "
            "goes on)",
        ),
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
    "request_record",
    "resolve_source",
    "sample_images",
    "verify_source",
]
