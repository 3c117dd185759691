"""The shapes world registers its policy, reward, prompt sources and pretraining command like a plugin."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nft_core.errors import UserError
from nft_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from nft_shapes.pretrain import PretrainConfig


def shapes_prompts(split: str):
    """`shapes:train`, `shapes:heldout`, `shapes:all`, `shapes:eval` (48 per tag), `shapes:eval-N`."""
    from nft_shapes import grammar

    if split.startswith("eval"):
        count = split.split("-", 1)[1] if "-" in split else "48"
        if split != "eval" and not (split.startswith("eval-") and count.isdigit() and int(count) >= 1):
            raise UserError(f"shapes:{split}: eval-N takes N >= 1 prompts per tag, e.g. shapes:eval-8")
        return grammar.eval_items(int(count))
    splits = {"train": grammar.train_prompts, "heldout": grammar.heldout_prompts, "all": grammar.all_prompts}
    if split not in splits:
        raise UserError(f"shapes:{split}: unknown split; allowed: train, heldout, all, eval, eval-N")
    return splits[split]()


def _policy(**options):
    from nft_shapes.policy import ShapesTinyPolicy

    return ShapesTinyPolicy(**options)


def _reward(**options):
    from nft_shapes.reward import shapes_geneval

    return shapes_geneval(**options)


@hookimpl
def register_policies(register):
    from nft_shapes.policy import ShapesTinyOptions

    register("shapes-tiny", _policy, options=ShapesTinyOptions, description="tiny text-to-image UNet (32x32)")


@hookimpl
def register_rewards(register):
    from nft_shapes.reward import ShapesGenEvalOptions

    register(
        "shapes-geneval",
        _reward,
        options=ShapesGenEvalOptions,
        description="GenEval on shapes images: the geneval reward with the shapes detector",
    )
    from nft_shapes.colour_area import ColourAreaOptions

    register(
        "shapes-colour-area",
        _colour_area,
        options=ColourAreaOptions,
        description="share of pixels in a world colour: hackable by design (ignores the prompt)",
    )


def _colour_area(**options):
    from nft_shapes.colour_area import ColourArea

    return ColourArea.from_options(**options)


@hookimpl
def register_monitors(register):
    from nft_shapes.monitor import ShapesDiversity, ShapesDiversityOptions

    register(
        "shapes-diversity",
        ShapesDiversity,
        options=ShapesDiversityOptions,
        description="colour and layout entropy of the groups whose prompt leaves them free",
    )


@hookimpl
def register_prompt_sources(register):
    register("shapes", shapes_prompts)


@hookimpl
def register_commands(app):
    import typer

    if any(info.name == "shapes" for info in getattr(app, "registered_groups", [])):
        return  # already added (the app is built once per process, `build_app` may run again)
    shapes = typer.Typer(help="The embedded shapes world.", no_args_is_help=True)

    @shapes.command("pretrain")
    def pretrain_command(
        out: Path = typer.Option(Path("shapes-tiny.safetensors"), help="checkpoint file to write"),
        steps: int | None = typer.Option(None, help="optimizer steps of stage 1 (shipped: 3000)"),
        seed: int | None = typer.Option(None),
        threads: int = typer.Option(
            2, help="torch CPU threads (shipped: 2); the weights are bitwise reproducible for a fixed count"
        ),
        snapshots: str = typer.Option(
            "", help="comma-separated step counts after which to also write OUT-stepN.safetensors"
        ),
        text_layers: int | None = typer.Option(None, help="text encoder layers (shipped: 1)"),
        token_init_std: float | None = typer.Option(
            None, help="token embedding init std (shipped: 1.0; 0.02 lets word order through a transformer)"
        ),
        position_embedding: bool | None = typer.Option(
            None,
            "--position-embedding/--no-position-embedding",
            help="2D position code before attention (shipped: on)",
        ),
        text_encoder: str | None = typer.Option(
            None, help="text encoder: gru (shipped; bidirectional, order-aware) or transformer"
        ),
        tag_weights: str = typer.Option(
            "", help="six comma-separated relative tag frequencies in GenEval order (shipped: 1,1,1.5,1,3,3)"
        ),
        timesteps: str | None = typer.Option(
            None, help="training time sampling: uniform (shipped) or logit-normal (SD3's)"
        ),
        logit_mean: float | None = typer.Option(None, help="logit-normal mean (default 0)"),
        logit_std: float | None = typer.Option(None, help="logit-normal std (default 1)"),
        label_noise_tags: str | None = typer.Option(
            None,
            help="comma-separated tags whose scenes get near-miss label noise (stage 1: the four small tags)",
        ),
        init: Path | None = typer.Option(
            None, help="one stage from this checkpoint's weights instead of random ones"
        ),
        second_stage: bool = typer.Option(
            True,
            help="continue with the shipped second stage (keep-order label noise on every tag, 1000 steps),"
            " the first written to OUT-stage1; not with --init",
        ),
        lr: float | None = typer.Option(None, help="learning rate (shipped: 1e-3)"),
        label_noise: float | None = typer.Option(
            None, help="fraction of those scenes that show a near miss instead (stage 1: 0.3; stage 2: 0.4)"
        ),
        near_misses: str | None = typer.Option(
            None,
            help="near misses: any (stage 1; reversed relations, swapped colours) or keep-order (stage 2;"
            " other axis, one colour replaced)",
        ),
    ) -> None:
        """Reproduce the shipped checkpoint from scratch (deterministic for a given config): the first stage
        as the options say (snapshots are of it), then the shipped second stage."""
        import torch

        from nft_shapes.pretrain import pretrain, recipe

        try:
            config = _pretrain_config(
                {
                    "steps": steps,
                    "seed": seed,
                    "text_layers": text_layers,
                    "token_init_std": token_init_std,
                    "position_embedding": position_embedding,
                    "text_encoder": text_encoder,
                    "timesteps": timesteps,
                    "logit_mean": logit_mean,
                    "logit_std": logit_std,
                    "label_noise": label_noise,
                    "near_misses": near_misses,
                    "init": None if init is None else str(init),
                    "lr": lr,
                },
                label_noise_tags,
                tag_weights,
            )
            steps_at = _snapshot_steps(snapshots, config.steps)
            if threads < 1:
                raise UserError(f"--threads {threads}: must be at least 1")
            _check_out(out)
            torch.set_num_threads(threads)
            for index, (stage, path) in enumerate(recipe(config, out, second_stage and init is None)):
                pretrain(stage, path, snapshots=steps_at if index == 0 else ())
                typer.echo(f"wrote {path}")
        except UserError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None

    app.add_typer(shapes, name="shapes")


def _pretrain_config(
    options: dict[str, Any], label_noise_tags: str | None, tag_weights: str
) -> PretrainConfig:
    """The `PretrainConfig` the command's options describe; a bad value is a one-line UserError."""
    import dataclasses

    from nft_shapes.pretrain import PretrainConfig

    changes = {key: value for key, value in options.items() if value is not None}
    if label_noise_tags is not None:
        changes["label_noise_tags"] = tuple(
            part.strip() for part in label_noise_tags.split(",") if part.strip()
        )
    if tag_weights:
        try:
            changes["tag_weights"] = tuple(float(part) for part in tag_weights.split(","))
        except ValueError:
            raise UserError(f"--tag-weights {tag_weights!r}: expected six comma-separated numbers") from None
    try:
        return dataclasses.replace(PretrainConfig(), **changes)
    except ValueError as error:  # "label_noise: 1.5 must be in [0, 1]": the field of --label-noise
        raise UserError(f"nft shapes pretrain: {error}") from None


def _snapshot_steps(snapshots: str, steps: int) -> list[int]:
    """`--snapshots 500,1000` -> [500, 1000]; each a step count between 1 and `steps`."""
    try:
        found = sorted({int(part) for part in snapshots.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--snapshots {snapshots!r}: expected comma-separated step counts") from None
    beyond = [step for step in found if not 1 <= step <= steps]
    if beyond:
        raise UserError(f"--snapshots: step {beyond[0]} is outside the run's 1 to {steps} steps")
    return found


def _check_out(out: Path) -> None:
    """A UserError before training unless the checkpoint file `out` can be written."""
    from nft_core.io import check_output_folder

    if out.is_dir():
        raise UserError(
            f"--out {out}: a folder; give the checkpoint's file name, e.g. {out / 'shapes-tiny.safetensors'}"
        )
    if out.suffix == ".json":
        raise UserError(f"--out {out}: the record is written beside the weights as .json; use .safetensors")
    check_output_folder(out.parent, "--out")
