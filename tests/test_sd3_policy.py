"""The `sd3` policy on a tiny random SD3 pipeline saved to disk and loaded through the real path: what is
SD3's own (the prompt cache, the LoRA views, the trainer's refresh schedule, resume, DDP, `nft sample`,
errors and presets). Sampling against the stock pipeline, the policy contract, a toy NFT run, FSDP2 and
`nft export` are checked for every family in tests/test_families.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA
from typer.testing import CliRunner

from nft_core.errors import ConfigError, UserError
from tests._sd3_tiny import MAX_SEQUENCE_LENGTH, RESOLUTION, policy_options, save_tiny_sd3

pytest.importorskip("diffusers")
pytest.importorskip("peft")

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "examples").glob("sd35m-*.toml"))
PROMPTS = ["a red cube", "two blue balls", "a green cat"]
runner = CliRunner()

RUN_CONFIG = """
name = "{name}"
[policy]
name = "sd3"
model = "{model}"
resolution = {resolution}
max_sequence_length = {tokens}
{policy_extra}
[solver]
name = "euler"
steps = 2
shift = 3.0
[objective]
name = "nft"
beta = 1.0
kl_weight = 0.01
old_decay = "linear-0.1-0.9"
[data]
prompts = "{prompts}"
prompts_per_epoch = 2
images_per_prompt = 2
[train]
lr = 0.01
epochs = {epochs}
precision = "fp32"
batch_size = 2
optimizer_steps_per_epoch = 2
sample_batch_size = 8
[eval]
prompts = "{prompts}"
baseline_guidance = [2.0]
[eval.solver]
name = "euler"
steps = 2
[log]
grid_every = 1
progress = false
[[reward]]
name = "jpeg-compressibility"
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The tiny pipeline saved with `save_pretrained` (what a downloaded hub repo looks like)."""
    return save_tiny_sd3(tmp_path_factory.mktemp("sd3") / "tiny-sd3")


def make_policy(model_dir: Path, **overrides):
    """The `sd3` policy built through the registry, as a run builds it."""
    from nft_core import registry

    return registry.create("policies", "sd3", policy_options(model_dir, **overrides), "policy")


def stock_pipeline(model_dir: Path):
    from diffusers import StableDiffusion3Pipeline

    pipeline = StableDiffusion3Pipeline.from_pretrained(str(model_dir))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def inputs(policy, batch: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *policy.latent_shape), generator=generator)
    t = torch.tensor([0.3, 0.8])[:batch]
    return x, t, policy.encode_prompts(PROMPTS[:batch])


def raw_velocity(transformer, x, t, cond) -> torch.Tensor:
    with torch.no_grad():
        return transformer(
            hidden_states=x,
            timestep=t * 1000,
            encoder_hidden_states=cond["prompt_embeds"],
            pooled_projections=cond["pooled_prompt_embeds"],
            return_dict=False,
        )[0]


def perturb_trained(policy, scale: float = 0.5, seed: int = 1) -> None:
    """LoRA B starts at zero: give the trained adapter a visible effect."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in policy.lora.trained.items():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def write_config(tmp: Path, model_dir: Path, name: str, epochs: int, policy_extra: str) -> Path:
    prompts = tmp / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    path = tmp / f"{name}.toml"
    path.write_text(
        RUN_CONFIG.format(
            name=name,
            model=model_dir,
            resolution=RESOLUTION,
            tokens=MAX_SEQUENCE_LENGTH,
            policy_extra=policy_extra,
            prompts=prompts,
            epochs=epochs,
        )
    )
    return path


def run_recording_refreshes(config_path: Path, run_dir: Path, snapshot):
    """Run the real Trainer; record (decay, step, old before, current, old after) at every refresh."""
    from nft_core.config import load_config
    from nft_core.loop.trainer import Trainer

    trainer = Trainer(load_config(config_path), run_dir, echo=lambda *_: None)
    policy, events = trainer.policy, []
    original = policy.refresh_old

    def recording(decay: float) -> None:
        old_before, current = snapshot(policy)
        original(decay)
        events.append((decay, trainer.state.global_step, old_before, current, snapshot(policy)[0]))

    policy.refresh_old = recording
    initial = snapshot(policy)
    summary = trainer.run()
    return trainer, summary, events, initial


def lora_snapshot(policy):
    old = {n: policy.lora.old[n].detach().clone() for n in policy.lora.trained}
    current = {n: p.detach().clone() for n, p in policy.lora.trained.items()}
    return old, current


def full_snapshot(policy):
    old = {n: p.detach().clone() for n, p in policy.old_transformer.named_parameters()}
    current = {n: p.detach().clone() for n, p in policy.transformer.named_parameters()}
    return old, current


def check_refreshes(trainer, events, initial) -> None:
    """`old <- d old + (1 - d) current` with `d` from the configured schedule, after every epoch."""
    assert len(events) == trainer.config.train.epochs
    old0, current0 = initial
    for name in current0:
        assert torch.equal(old0[name], current0[name]), "old starts as a copy of the trained weights"
    for decay, step, old_before, current, old_after in events:
        assert decay == pytest.approx(min(0.1 * step, 0.9))
        for name in current:
            expected = decay * old_before[name] + (1 - decay) * current[name]
            torch.testing.assert_close(old_after[name], expected, rtol=1e-5, atol=1e-6)


# ---- prompts ----------------------------------------------------------------------------------------
def test_prompt_embeddings_are_cached_per_prompt(model_dir):
    policy = make_policy(model_dir, prompt_cache_size=2, text_batch_size=2)
    encoded: list[list[str]] = []
    original = policy._encode
    policy._encode = lambda prompts: (encoded.append(list(prompts)), original(prompts))[1]
    first = policy.encode_prompts([PROMPTS[0], PROMPTS[1], PROMPTS[0]])
    again = policy.encode_prompts([PROMPTS[1], PROMPTS[0]])
    assert encoded == [[PROMPTS[0], PROMPTS[1]]], "each distinct prompt is encoded once"
    torch.testing.assert_close(again["prompt_embeds"][1], first["prompt_embeds"][0])
    policy.encode_prompts([PROMPTS[2]])
    assert list(policy._cache) == [PROMPTS[0], PROMPTS[2]], "least recently used prompt evicted"
    null = policy.null_cond(3)
    empty = policy.encode_prompts([""])
    assert null["prompt_embeds"].shape == (3, *empty["prompt_embeds"].shape[1:])
    torch.testing.assert_close(null["pooled_prompt_embeds"][2], empty["pooled_prompt_embeds"][0])


# ---- LoRA views -------------------------------------------------------------------------------------
def test_lora_views_reference_is_the_base_model_and_old_tracks_default(model_dir):
    policy = make_policy(model_dir)
    base = stock_pipeline(model_dir).transformer
    x, t, cond = inputs(policy)
    v_base = raw_velocity(base, x, t, cond)
    perturb_trained(policy)
    with torch.no_grad():
        v_current = policy.velocity("current", x, t, cond)
        v_old = policy.velocity("old", x, t, cond)
        v_reference = policy.velocity("reference", x, t, cond)
    assert torch.equal(v_reference, v_base), "reference = adapters disabled = the base model, exactly"
    assert torch.equal(v_old, v_base), "old still holds the initial (zero-B) adapter"
    assert (v_current - v_base).abs().max() > 1e-2
    old, trained = lora_snapshot(policy)
    assert all(torch.count_nonzero(old[n]) == 0 for n in old if "lora_B" in n)
    policy.refresh_old(0.25)
    for name, value in trained.items():
        expected = 0.25 * old[name] + 0.75 * value
        torch.testing.assert_close(policy.lora.old[name], expected, rtol=0, atol=1e-7)
    policy.refresh_old(0.0)
    with torch.no_grad():
        torch.testing.assert_close(policy.velocity("old", x, t, cond), v_current, rtol=0, atol=1e-6)
    assert all(p.requires_grad for p in policy.lora.trained.values())
    assert not any(p.requires_grad for p in policy.lora.old.values())
    names = [name for name, _ in policy.trainable_parameters()]
    assert names and all(".lora_" in n and ".default." in n for n in names)
    assert any(".ff.net." in n for n in names) and any(".attn.to_q." in n for n in names)


def test_view_switches_never_go_through_diffusers_model_level_adapter_calls(model_dir, monkeypatch):
    """diffusers' `set_adapter` / `disable_adapters` re-read package metadata on every call (1-4 ms a
    switch): the views switch peft's LoRA layers directly, and give the same velocities."""
    policy = make_policy(model_dir)
    x, t, cond = inputs(policy)
    perturb_trained(policy)
    with torch.no_grad():
        expected = {view: policy.velocity(view, x, t, cond) for view in ("current", "old", "reference")}

    def slow(*args, **kwargs):
        raise AssertionError("a view switch called diffusers' model-level adapter API")

    for name in ("set_adapter", "disable_adapters", "enable_adapters"):
        monkeypatch.setattr(policy.transformer, name, slow)
    with torch.no_grad():
        for view in ("reference", "old", "current", "old", "reference"):
            assert torch.equal(policy.velocity(view, x, t, cond), expected[view]), view


def test_sampling_on_a_cpu_runs_the_adapter_merged_and_puts_the_base_weights_back_exactly(model_dir):
    """`policy.lora.merge_for_sampling` (auto: on a CPU): an eval-mode call without gradients runs each
    adapted layer as one linear with the adapter folded in, equal to the adapter run beside it to
    rounding; the merge follows the adapter's weights, and any training-mode call restores the base."""
    policies = []
    for merge in ("auto", False):
        torch.manual_seed(0)  # the same LoRA initialisation
        policies.append(make_policy(model_dir, lora={"rank": 4, "alpha": 8.0, "merge_for_sampling": merge}))
    merged, plain = policies
    assert merged._merge_for_sampling and not plain._merge_for_sampling
    for policy in (merged, plain):
        perturb_trained(policy)
        policy.lora.refresh(0.5)  # old != current
    x, t, cond = inputs(merged)
    base = {
        name: p.detach().clone() for name, p in merged.transformer.named_parameters() if "lora_" not in name
    }
    merged.train(False), plain.train(False)
    with torch.no_grad():
        for view in ("old", "current", "old", "reference"):
            torch.testing.assert_close(merged.velocity(view, x, t, cond), plain.velocity(view, x, t, cond),
                                       rtol=0, atol=1e-5)  # fmt: skip
        merged.velocity("old", x, t, cond)
        assert merged.lora.merged and all(layer.merged for layer in merged.lora._layers)
        for policy in (merged, plain):  # the old adapter moves: the merge is redone
            policy.lora.refresh(0.0)
        torch.testing.assert_close(merged.velocity("old", x, t, cond), plain.velocity("old", x, t, cond),
                                   rtol=0, atol=1e-5)  # fmt: skip
    merged.train(True), plain.train(True)
    with torch.no_grad():  # the update's old prediction: merged for the call (the kept merge), then current
        torch.testing.assert_close(merged.velocity("old", x, t, cond), plain.velocity("old", x, t, cond),
                                   rtol=0, atol=1e-5)  # fmt: skip
    assert merged.lora.view == "current" and not merged.lora.merged
    # a training forward runs the adapter on the original weights: it gets a gradient
    merged.velocity("current", x, t, cond).square().mean().backward()
    assert not merged.lora.merged and not any(layer.merged for layer in merged.lora._layers)
    after = {name: p for name, p in merged.transformer.named_parameters() if "lora_" not in name}
    assert all(torch.equal(after[name], value) for name, value in base.items())
    assert all(p.grad is not None for _, p in merged.trainable_parameters())


def test_gradients_survive_view_switches_under_gradient_checkpointing(model_dir):
    """The objective queries `reference` after `current` and before backward: gradients must not change."""
    policy = make_policy(model_dir, gradient_checkpointing=True)
    perturb_trained(policy)
    policy.train(True)
    x, t, cond = inputs(policy)

    def grads(with_reference: bool) -> dict[str, torch.Tensor]:
        for _, parameter in policy.trainable_parameters():
            parameter.grad = None
        with torch.no_grad():
            policy.velocity("old", x, t, cond)
        v = policy.velocity("current", x, t, cond)
        if with_reference:
            with torch.no_grad():
                policy.velocity("reference", x, t, cond)
        v.square().mean().backward()
        return {n: p.grad.clone() for n, p in policy.trainable_parameters()}

    plain, switched = grads(False), grads(True)
    # only the last block's text-query LoRA cannot reach the image output (that block is context-pre-only)
    assert sum(bool(g.abs().sum() > 0) for g in plain.values()) == len(plain) - 2
    for name in plain:
        torch.testing.assert_close(switched[name], plain[name], rtol=0, atol=0)


def test_sampling_keeps_its_view_while_training_returns_to_current(model_dir):
    """In eval mode a view stays active (sampling's `old` steps switch once); in train mode every call
    returns to `current`, which a checkpointed backward reruns."""
    policy = make_policy(model_dir)
    perturb_trained(policy)
    x, t, cond = inputs(policy)
    policy.train(False)
    with torch.no_grad():
        v_old = policy.velocity("old", x, t, cond)
        assert policy.lora.view == "old"
        torch.testing.assert_close(policy.velocity("old", x, t, cond), v_old, rtol=0, atol=0)
        v_current = policy.velocity("current", x, t, cond)
    assert policy.lora.view == "current" and not torch.equal(v_current, v_old)
    policy.train(True)
    with torch.no_grad():
        policy.velocity("reference", x, t, cond)
    assert policy.lora.view == "current"


def test_bf16_precision_keeps_lora_master_weights_in_fp32(model_dir):
    policy = make_policy(model_dir, precision="bf16")
    assert policy.pipeline.text_encoder.dtype == torch.bfloat16
    assert policy.pipeline.vae.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in (*policy.lora.trained.values(), *policy.lora.old.values()))
    assert policy.transformer.transformer_blocks[0].attn.to_q.base_layer.weight.dtype == torch.bfloat16
    x, t, cond = inputs(policy)
    assert cond["prompt_embeds"].dtype == torch.bfloat16
    v = policy.velocity("current", x, t, cond)
    assert v.dtype == torch.float32 and torch.isfinite(v).all()
    v.square().mean().backward()
    grads = [p.grad for _, p in policy.trainable_parameters()]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)


# ---- training runs through the real Trainer ---------------------------------------------------------
@pytest.fixture(scope="module")
def lora_run(model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora-run")
    config = write_config(tmp, model_dir, "sd3-lora", 2, "[policy.lora]\nrank = 4\nalpha = 8.0")
    return run_recording_refreshes(config, tmp / "run", lora_snapshot)


def test_lora_nft_epochs_complete_and_old_follows_the_decay_schedule(lora_run, model_dir):
    trainer, summary, events, initial = lora_run
    policy = trainer.policy
    assert summary["epochs"] == 2 and summary["optimizer_steps"] == 4
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all(r["loss_kl"] > 0 for r in train), "the kl term queried the reference view"
    check_refreshes(trainer, events, initial)
    _, current0 = initial
    moved = [name for name, p in policy.lora.trained.items() if not torch.equal(p, current0[name])]
    # all but the last block's text-query LoRA B, which cannot reach the output and stays zero
    assert len(moved) == len(current0) - 1
    x, t, cond = inputs(policy)
    with torch.no_grad():
        views = {view: policy.velocity(view, x, t, cond) for view in ("current", "old", "reference")}
    v_base = raw_velocity(stock_pipeline(model_dir).transformer, x, t, cond)
    assert torch.equal(views["reference"], v_base)
    assert (views["current"] - views["old"]).abs().max() > 1e-4, "old lags behind (decay > 0)"
    assert (views["current"] - v_base).abs().max() > 1e-3


def test_saved_lora_loads_into_a_stock_pipeline(lora_run, model_dir):
    """The checkpoint (EMA weights) is a diffusers LoRA: load_lora_weights reproduces our current view."""
    trainer, summary, _, _ = lora_run
    checkpoint = Path(summary["checkpoint"])
    assert (checkpoint / "pytorch_lora_weights.safetensors").is_file()
    policy = trainer.policy
    x, t, cond = inputs(policy)
    with trainer.ema.swapped_in(policy.trainable_parameters()), torch.no_grad():
        ours = policy.velocity("current", x, t, cond)
    pipeline = stock_pipeline(model_dir)
    before = raw_velocity(pipeline.transformer, x, t, cond)
    pipeline.load_lora_weights(str(checkpoint))
    after = raw_velocity(pipeline.transformer, x, t, cond)
    assert (after - before).abs().max() > 1e-3, "the LoRA changes the stock pipeline's output"
    torch.testing.assert_close(after, ours, rtol=1e-5, atol=1e-5)
    image_args = dict(
        prompt=PROMPTS[:1],
        num_inference_steps=2,
        guidance_scale=1.0,
        height=RESOLUTION,
        width=RESOLUTION,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    )
    assert pipeline(**image_args).images.shape == (1, 3, RESOLUTION, RESOLUTION)
    fresh = make_policy(model_dir)
    fresh.load_trainable(str(checkpoint))
    with torch.no_grad():
        torch.testing.assert_close(fresh.velocity("current", x, t, cond), ours, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fresh.velocity("old", x, t, cond), ours, rtol=1e-5, atol=1e-5)


def test_full_finetuning_run(model_dir, tmp_path):
    from diffusers import SD3Transformer2DModel

    config = write_config(tmp_path, model_dir, "sd3-full", 1, "lora = false")
    trainer, summary, events, initial = run_recording_refreshes(config, tmp_path / "run", full_snapshot)
    policy = trainer.policy
    assert policy.lora is None and summary["optimizer_steps"] == 2
    check_refreshes(trainer, events, initial)
    x, t, cond = inputs(policy)
    with torch.no_grad():
        v_current = policy.velocity("current", x, t, cond)
        v_reference = policy.velocity("reference", x, t, cond)
    assert torch.equal(v_reference, raw_velocity(stock_pipeline(model_dir).transformer, x, t, cond))
    assert (v_current - v_reference).abs().max() > 1e-3
    saved = SD3Transformer2DModel.from_pretrained(str(Path(summary["checkpoint"]) / "transformer"))
    for name, parameter in saved.named_parameters():
        torch.testing.assert_close(parameter, trainer.ema.shadow[name], rtol=0, atol=0)
    fresh = make_policy(model_dir, lora=False, keep_reference=False)
    fresh.load_trainable(summary["checkpoint"])
    with trainer.ema.swapped_in(policy.trainable_parameters()), torch.no_grad():
        ours = policy.velocity("current", x, t, cond)
    with torch.no_grad():
        torch.testing.assert_close(fresh.velocity("current", x, t, cond), ours, rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="keep_reference"):
        fresh.velocity("reference", x, t, cond)


# ---- nft sample -------------------------------------------------------------------------------------
def sample_app():
    import typer

    from nft_core.cli.sample import add_sample_command

    app = typer.Typer()
    app.command("noop")(lambda: None)
    add_sample_command(app)
    return app


def test_sample_writes_flat_and_geneval_layouts(lora_run, tmp_path):
    from nft_core.cli.image_folders import image_files, metadata_layout

    trainer, summary, _, _ = lora_run
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\na blue ball\n")
    out = tmp_path / "flat"
    args = ["sample", summary["checkpoint"], "--prompts", str(prompts), "--out", str(out), "-n", "2"]
    result = runner.invoke(sample_app(), args)
    assert result.exit_code == 0, result.output
    files = image_files([out])
    lines = (out / "prompts.txt").read_text().splitlines()
    assert [f.name for f in files] == ["00000-0.png", "00000-1.png", "00001-0.png", "00001-1.png"]
    assert lines == ["a red cube", "a red cube", "a blue ball", "a blue ball"]
    assert json.loads((out / "sample.json").read_text())["images"] == 4

    base = tmp_path / "base"
    config = trainer.run_dir / "config.resolved.toml"
    result = runner.invoke(
        sample_app(), ["sample", str(config), "--prompts", str(prompts), "--out", str(base), "-n", "2"]
    )
    assert result.exit_code == 0, result.output
    trained_pixels = (out / "00000-0.png").read_bytes()
    assert trained_pixels != (base / "00000-0.png").read_bytes(), "the checkpoint's weights were loaded"

    metadata = tmp_path / "meta.jsonl"
    rows = [
        {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"},
        {
            "tag": "colors",
            "include": [{"class": "car", "count": 1, "color": "red"}],
            "prompt": "a photo of a red car",
        },
    ]
    metadata.write_text("".join(json.dumps(r) + "\n" for r in rows))
    layout = tmp_path / "geneval"
    run_dir = str(trainer.run_dir)
    args = ["sample", run_dir, "--prompts", str(metadata), "--out", str(layout), "-n", "3", "--steps", "1"]
    result = runner.invoke(sample_app(), args)
    assert result.exit_code == 0, result.output
    found = metadata_layout(layout)
    assert found.metadata == [rows[0]] * 3 + [rows[1]] * 3
    assert [p.name for p in found.files] == ["00000.png", "00001.png", "00002.png"] * 2
    assert [p.parent.parent.name for p in found.files] == ["00000"] * 3 + ["00001"] * 3

    # the same request again resumes (nothing left to sample); another one into that folder is refused
    before = {p: p.read_bytes() for p in found.files}
    result = runner.invoke(sample_app(), args)
    assert result.exit_code == 0, result.output
    assert {p: p.read_bytes() for p in found.files} == before
    result = runner.invoke(sample_app(), [*args[:-1], "2"])
    assert result.exit_code == 2 and "differs" in result.output


# ---- errors and presets -----------------------------------------------------------------------------
def test_missing_or_wrong_checkpoints_give_one_line_errors(model_dir, tmp_path, monkeypatch):
    from nft_policies.base.loading import resolve_folder

    with pytest.raises(UserError, match="does not exist"):
        make_policy(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no model_index.json"):
        make_policy(tmp_path / "empty")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("NFT_WEIGHTS_DIR", raising=False)
    with pytest.raises(UserError) as error:
        resolve_folder("someorg/not-cached-model")
    message = str(error.value)
    assert "\n" not in message and "someorg/not-cached-model" in message and "hf download" in message
    with pytest.raises(UserError, match="not a multiple of 4"):
        make_policy(model_dir, resolution=30)
    with pytest.raises(UserError, match="target_modules"):
        make_policy(model_dir, lora={"rank": 4, "target_modules": ["no_such_layer"]})
    with pytest.raises(ConfigError, match="policy.precision: Input should be 'fp32', 'bf16' or 'fp16'"):
        make_policy(model_dir, precision="fp8")
    policy = make_policy(model_dir)
    with pytest.raises(UserError, match="pytorch_lora_weights"):
        policy.load_trainable(str(tmp_path / "empty"))
    policy.save_trainable(str(tmp_path / "lora"))
    with pytest.raises(UserError, match="lora_alpha"):
        make_policy(model_dir, lora={"rank": 4, "alpha": 4.0}).load_trainable(str(tmp_path / "lora"))
    other_rank = make_policy(model_dir, lora={"rank": 2, "alpha": 8.0})
    with pytest.raises(UserError, match="saved with r = 4"):
        other_rank.load_trainable(str(tmp_path / "lora"))
    with pytest.raises(UserError, match="shape"):
        other_rank.lora.load_state_dict(policy.lora.state_dict(), "rank-4 LoRA")


def test_weights_dir_layout_is_found_before_the_hub(model_dir, tmp_path, monkeypatch):
    import shutil

    from nft_policies.base.loading import resolve_folder

    shutil.copytree(model_dir, tmp_path / "org" / "tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NFT_WEIGHTS_DIR", str(tmp_path))
    assert resolve_folder("org/tiny") == tmp_path / "org" / "tiny"


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_validate_without_loading_weights(preset, monkeypatch):
    from nft_core.cli.app import build_app
    from nft_policies.base import loading

    def forbidden(*args, **kwargs):
        raise AssertionError("validation must not load weights")

    monkeypatch.setattr(loading, "load_pipeline", forbidden)
    monkeypatch.setattr(loading, "resolve_folder", forbidden)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # --portable: the presets are for a GPU machine that holds their prompt files
    result = runner.invoke(build_app(), ["validate", "--portable", str(preset)])
    assert result.exit_code == 0, result.output
    assert "policy sd3" in result.output
    if not torch.cuda.is_available():
        here = runner.invoke(build_app(), ["validate", str(preset)])
        assert here.exit_code == 2 and "train.device: 'cuda'" in here.output


def test_all_five_presets_exist():
    assert {p.stem for p in PRESETS} == {
        "sd35m-geneval",
        "sd35m-ocr",
        "sd35m-pickscore",
        "sd35m-hpsv2",
        "sd35m-multireward",
    }


# ---- the presets' GenEval prompt source -------------------------------------------------------------
GENEVAL_TEST = SHARED_DATA / "geneval" / "evaluation_metadata.jsonl"


@pytest.mark.skipif(not GENEVAL_TEST.is_file(), reason="public GenEval prompts not available")
def test_geneval_templates_reproduce_the_official_prompts():
    from nft_rewards.geneval.prompts import prompt_for

    rows = [json.loads(line) for line in GENEVAL_TEST.read_text().splitlines() if line.strip()]
    assert len(rows) == 553
    assert [prompt_for(row) for row in rows] == [row["prompt"] for row in rows]


@pytest.mark.skipif(not GENEVAL_TEST.is_file(), reason="public GenEval prompts not available")
def test_geneval_source_generates_valid_metadata_without_test_prompts():
    from nft_core.loop.prompts import load_prompts
    from nft_rewards.geneval.metadata import validate_metadata

    items = load_prompts("geneval:train-50")
    again = load_prompts("geneval:train-50")
    assert [i.metadata for i in items] == [i.metadata for i in again], "deterministic"
    counts: dict[str, int] = {}
    for item in items:
        validate_metadata(item.metadata, item.prompt)
        assert item.metadata["prompt"] == item.prompt
        counts[item.metadata["tag"]] = counts.get(item.metadata["tag"], 0) + 1
    assert counts == {tag: 50 for tag in counts} and len(counts) == 6
    assert len({item.prompt for item in items}) == len(items)
    test = {json.loads(line)["prompt"] for line in GENEVAL_TEST.read_text().splitlines() if line.strip()}
    everything = load_prompts("geneval:train-100,seed=2")
    assert any(item.prompt in test for item in everything), "without exclusion test prompts can appear"
    kept = load_prompts(f"geneval:train-100,exclude={GENEVAL_TEST},seed=2")
    assert kept and not any(item.prompt in test for item in kept)
    assert "single_object" not in {item.metadata["tag"] for item in kept}, (
        "all 80 single objects are test prompts"
    )
    for bad in (
        "geneval:test",
        "geneval:train-x",
        "geneval:train,colour=red",
        f"geneval:train,exclude={REPO}/no",
    ):
        with pytest.raises(UserError):
            load_prompts(bad)


def test_a_lora_run_resumes_bitwise_and_warm_starts_a_new_one(lora_run, model_dir, tmp_path):
    from safetensors.torch import load_file

    from nft_core.config import load_config
    from nft_core.loop.trainer import Trainer
    from nft_core.state.checkpoints import RESUME_FILE, latest_checkpoint
    from nft_policies.sd3.policy import LORA_FILE

    trainer, *_ = lora_run
    lora = "[policy.lora]\nrank = 4\nalpha = 8.0"
    warm_config = write_config(tmp_path, model_dir, "warm", 1, f'init_from = "{trainer.run_dir}"\n{lora}')
    warm = Trainer(load_config(warm_config), tmp_path / "warm", echo=lambda *_: None)
    saved = load_file(str(latest_checkpoint(trainer.run_dir) / LORA_FILE))  # the EMA of the LoRA
    loaded = warm.policy.lora.state_dict()
    assert loaded and all(torch.equal(value, saved[f"transformer.{key}"]) for key, value in loaded.items())
    assert warm.state.global_step == 0 and not warm.updater.optimizer.state

    config = load_config(write_config(tmp_path, model_dir, "resume", 2, lora))
    Trainer(config, tmp_path / "whole", echo=lambda *_: None).run()
    first = Trainer(config, tmp_path / "parts", echo=lambda *_: None)
    original = first.after_epoch

    def stop_after_epoch_0(record, samples, scored, last):
        written = original(record, samples, scored, last)
        first.stop_signal = "SIGTERM"
        return written

    first.after_epoch = stop_after_epoch_0
    assert first.run()["status"] == "interrupted"
    checkpoint = latest_checkpoint(tmp_path / "parts", resumable=True)
    Trainer(config, tmp_path / "parts", echo=lambda *_: None).run(resume=checkpoint)
    a = load_file(str(latest_checkpoint(tmp_path / "parts") / RESUME_FILE))
    b = load_file(str(latest_checkpoint(tmp_path / "whole") / RESUME_FILE))
    assert a.keys() == b.keys() and any(key.startswith("old.") for key in a)
    assert [key for key in a if not torch.equal(a[key], b[key])] == []


def test_a_lora_run_on_two_gloo_ranks_matches_one_process(model_dir, tmp_path):
    from safetensors.torch import load_file

    from nft_core.state.checkpoints import RESUME_FILE, latest_checkpoint
    from tests._torchrun import finish, nft_command, start

    config = write_config(tmp_path, model_dir, "ddp", 2, "[policy.lora]\nrank = 4\nalpha = 8.0")
    # Adam with eps 1: a step proportional to the gradient, so float noise stays float noise
    common = ["train.adam_eps=1.0", "train.lr=1.0", "eval.baseline_guidance=[]", "log.grid_every=0"]
    common.append("train.threads=1")
    finish(start(nft_command(config, tmp_path / "one", 1, [*common, "train.batch_size=2"])))
    output = finish(start(nft_command(config, tmp_path / "two", 2, [*common, "train.batch_size=1"])))
    assert "2 ranks: each samples 2" in output
    one, two = (load_file(str(latest_checkpoint(tmp_path / d / "ddp") / RESUME_FILE)) for d in ("one", "two"))
    trained = [k for k in one if k.startswith(("current.", "old.", "ema."))]
    assert trained and one.keys() == two.keys()
    assert max(float(one[k].abs().max()) for k in trained if "lora_B" in k) > 1e-4  # B starts at zero
    assert max(float((one[k] - two[k]).abs().max()) for k in trained) <= 1e-5
