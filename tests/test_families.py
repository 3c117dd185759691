"""Every diffusers family on one test: a tiny random pipeline of each, built offline once, checked for

- sampling: our Euler solver on the pipeline's time grid reproduces the stock pipeline's denoising and
  decoding within 1e-5 (and `recommended_shift` gives that grid where a shift can);
- the policy contract (`check_policy`) in LoRA and full fine-tuning modes;
- a 6-epoch NFT run of a LoRA that raises a toy reward (mean brightness);
- `nft export`: the LoRA loads with the stock pipeline's `load_lora_weights`, the merged folder with
  `from_pretrained` alone, and equals LoRA-on-base within 1e-4.

and that every default LoRA target wraps a module and CFG's batch of prompts and empty prompt equals two
separate calls. The editing family (`qwen-image-edit`) runs each check with a source image per prompt
(an `edit:` prompt source in the run, rewarded for brightness gained over the source), the video family
(`wan`) with frames (rewarded through `frames` around brightness, with a temporal term). Plus: for one
new family (`qwen-image`) full fine-tuning sharded with FSDP2 over 2 gloo ranks matches one process; the
step-distilled toy check (docs/flux2.md); the new presets validate.
Family-specific tests stay in tests/test_sd3_policy.py, tests/test_flux_policy.py and
tests/test_sana_policy.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

from nft_core.loop.conditions import encode_items
from nft_core.protocols import ConditionedPolicy
from nft_core.testing import check_policy
from nft_core.types import SOURCE_IMAGE, PromptItem
from nft_policies.base.layout import pack, unpack
from tests import (
    _flux2_tiny,
    _flux_tiny,
    _qwen_image_edit_tiny,
    _qwen_image_tiny,
    _sana_tiny,
    _sd3_tiny,
    _wan_tiny,
    _z_image_tiny,
)

pytest.importorskip("diffusers")
pytest.importorskip("peft")

PROMPTS = ["a red circle", "two blue squares", "a green triangle", "one yellow star"]
RESOLUTION = 32


@dataclass(frozen=True)
class Family:
    """One family's tiny pipeline and how its stock pipeline is called."""

    policy: str
    pipeline: str
    """The diffusers pipeline class."""
    save: Callable[[Path], Path]
    options: Callable[..., dict]
    call: dict[str, Any] = field(default_factory=dict)
    """The stock pipeline's arguments besides the prompts, the latents and the size (CFG off)."""
    patch: int | None = None
    """The patch size of the pipeline's packed latents (FLUX.1, Qwen-Image 2, FLUX.2 1), None: unpacked."""
    packed_input: bool = True
    """Whether the pipeline takes its `latents` argument packed (FLUX.2 packs them itself)."""
    run_options: str = ""
    """Extra `[policy]` lines of the NFT run."""
    shifted_grid: bool = True
    """Whether the pipeline's grid is our shifted uniform one (`recommended_shift`); SD3's and SANA's
    pipelines space their times otherwise, Qwen-Image's stretches them to end at `shift_terminal`."""
    edit: bool = False
    """An editing family: each prompt comes with a source image (the stock pipeline's `image`, one prompt
    a call), and the run draws `edit:` prompts."""
    output: str = "images"
    """The stock pipeline output's field: `images`, or a video family's `frames` `[N, F, 3, H, W]`."""
    reward: str = 'name = "brightness"'
    """The run's `[[reward]]` lines (its label is the reward's name)."""

    def to_pipeline(self, latents: torch.Tensor) -> torch.Tensor:
        return latents if self.patch is None or not self.packed_input else pack(latents, self.patch)

    def from_pipeline(self, latents: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return latents if self.patch is None else unpack(latents, shape[-2], shape[-1], self.patch)


def _tokens(length: int) -> dict[str, int]:
    return {"max_sequence_length": length}


FLUX2_LAYERS = {
    "text_encoder_out_layers": _flux2_tiny.TEXT_LAYERS,
    **_tokens(_flux2_tiny.MAX_SEQUENCE_LENGTH),
}
FAMILIES = [
    Family(
        "sd3",
        "StableDiffusion3Pipeline",
        _sd3_tiny.save_tiny_sd3,
        _sd3_tiny.policy_options,
        {"guidance_scale": 1.0, **_tokens(_sd3_tiny.MAX_SEQUENCE_LENGTH)},
        shifted_grid=False,
    ),
    Family(
        "flux",
        "FluxPipeline",
        _flux_tiny.save_tiny_flux,
        _flux_tiny.flux_options,
        {"guidance_scale": 3.5, **_tokens(_flux_tiny.MAX_SEQUENCE_LENGTH)},
        patch=2,
    ),
    Family(
        "sana",
        "SanaPipeline",
        _sana_tiny.save_tiny_sana,
        partial(_sana_tiny.sana_options, complex_human_instruction=False),
        {
            "guidance_scale": 1.0,
            "clean_caption": False,
            "complex_human_instruction": None,
            **_tokens(_sana_tiny.MAX_SEQUENCE_LENGTH),
        },
        run_options="complex_human_instruction = false",
        shifted_grid=False,
    ),
    Family(
        "qwen-image",
        "QwenImagePipeline",
        _qwen_image_tiny.save_tiny_qwen_image,
        _qwen_image_tiny.qwen_image_options,
        {"true_cfg_scale": 1.0, **_tokens(_qwen_image_tiny.MAX_SEQUENCE_LENGTH)},
        patch=2,
        shifted_grid=False,
    ),
    Family(
        "qwen-image-edit",
        "QwenImageEditPipeline",
        _qwen_image_edit_tiny.save_tiny_qwen_image_edit,
        _qwen_image_edit_tiny.qwen_image_edit_options,
        {"true_cfg_scale": 1.0},
        patch=2,
        run_options=f"condition_resolution = {_qwen_image_edit_tiny.CONDITION_RESOLUTION}",
        shifted_grid=False,
        edit=True,
        reward='name = "brighter-than-source"',
    ),
    Family(
        "flux2",
        "Flux2Pipeline",
        _flux2_tiny.save_tiny_flux2,
        _flux2_tiny.flux2_options,
        {"guidance_scale": 4.0, **FLUX2_LAYERS},
        patch=1,
        packed_input=False,
        run_options=f"text_layers = {list(_flux2_tiny.TEXT_LAYERS)}",
    ),
    Family(
        "flux2-klein",
        "Flux2KleinPipeline",
        partial(_flux2_tiny.save_tiny_flux2, klein=True),
        _flux2_tiny.flux2_options,
        {"guidance_scale": 1.0, **FLUX2_LAYERS},
        patch=1,
        packed_input=False,
        run_options=f"text_layers = {list(_flux2_tiny.TEXT_LAYERS)}",
    ),
    Family(
        "z-image",
        "ZImagePipeline",
        _z_image_tiny.save_tiny_z_image,
        _z_image_tiny.z_image_options,
        {"guidance_scale": 0.0, **_tokens(_z_image_tiny.MAX_SEQUENCE_LENGTH)},
    ),
    Family(
        "wan",
        "WanPipeline",
        _wan_tiny.save_tiny_wan,
        _wan_tiny.wan_options,
        {"guidance_scale": 1.0, "num_frames": _wan_tiny.FRAMES, **_tokens(_wan_tiny.MAX_SEQUENCE_LENGTH)},
        run_options=f"frames = {_wan_tiny.FRAMES}\nfps = {_wan_tiny.FPS}",
        shifted_grid=False,
        output="frames",
        reward='name = "frames"\noptions = { reward = "brightness", temporal_weight = 0.1 }',
    ),
]
BY_NAME = {family.policy: family for family in FAMILIES}
NAMES = list(BY_NAME)


def source_images(count: int = 2) -> torch.Tensor:
    """Smooth random source images `[count, 3, 32, 32]`, exactly representable in 8 bits (as a PNG)."""
    coarse = torch.rand((count, 3, 4, 4), generator=torch.Generator().manual_seed(7))
    images = torch.nn.functional.interpolate(coarse, size=(RESOLUTION, RESOLUTION), mode="bilinear")
    return (images * 255).round() / 255


def prompt_items(family: Family, prompts: list[str]) -> list[PromptItem]:
    """The prompts as items; an editing family's each with a source image."""
    if not family.edit:
        return [PromptItem(prompt) for prompt in prompts]
    return [
        PromptItem(p, {SOURCE_IMAGE: s}) for p, s in zip(prompts, source_images(len(prompts)), strict=True)
    ]


def null_of(policy, cond: dict) -> dict:
    """The unconditional input of CFG: the empty prompt (with each row's source image when editing)."""
    if isinstance(policy, ConditionedPolicy):
        return policy.null_cond_for(cond)
    return policy.null_cond(next(iter(cond.values())).shape[0])


def stock_call(family: Family, prompts: list[str]) -> dict[str, Any]:
    """The stock pipeline's prompt arguments: the prompts, and an editing family's source image (PIL)."""
    if not family.edit:
        return {"prompt": list(prompts)}
    (source,) = source_images(1)
    from PIL import Image

    pixels = (source * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return {"prompt": list(prompts), "image": Image.fromarray(pixels)}


@pytest.fixture(autouse=True)
def edit_condition_at_the_tiny_size(monkeypatch):
    """The stock edit pipeline resizes source images to 1024^2 pixels; here to the tiny policy's size."""
    _qwen_image_edit_tiny.patch_condition_size(monkeypatch)


@pytest.fixture(scope="session")
def model_dirs(tiny_pipelines) -> dict[str, Path]:
    """Each family's tiny pipeline, saved with `save_pretrained` once per session (built on first use)."""

    class Folders(dict):
        def __missing__(self, name: str) -> Path:
            self[name] = tiny_pipelines(name, BY_NAME[name].save)
            return self[name]

    return Folders()


def make_policy(family: Family, folder: Path, **overrides):
    """The family's policy built through the registry, as a run builds it."""
    from nft_core import registry

    return registry.create("policies", family.policy, family.options(folder, **overrides), "policy")


def stock_pipeline(family: Family, folder: Path):
    import diffusers

    pipeline = getattr(diffusers, family.pipeline).from_pretrained(str(folder))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


# ---- sampling and decoding --------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_euler_sampling_and_decoding_match_the_stock_pipeline(name, model_dirs):
    """Our Euler over the pipeline's sigmas reproduces its denoising (its final latents, captured in its
    own layout) and its decoded images: the time, velocity, latent-layout and text conventions."""
    from nft_solvers.euler import EulerSolver

    family, folder = BY_NAME[name], model_dirs[name]
    policy, pipeline = make_policy(family, folder), stock_pipeline(family, folder)
    prompts = PROMPTS[: 1 if family.edit else 2]  # the edit pipeline takes one source image a call
    noise = torch.randn((len(prompts), *policy.latent_shape), generator=torch.Generator().manual_seed(3))
    captured: dict[str, torch.Tensor] = {}

    def capture(pipe, step, timestep, tensors):
        captured["latents"] = tensors["latents"]
        return {}

    output = pipeline(
        **stock_call(family, prompts),
        latents=family.to_pipeline(noise.clone()),
        num_inference_steps=4,
        height=RESOLUTION,
        width=RESOLUTION,
        output_type="pt",
        callback_on_step_end=capture,
        callback_on_step_end_tensor_inputs=["latents"],
        **family.call,
    )
    images = getattr(output, family.output)
    grid = pipeline.scheduler.sigmas.double()
    if family.shifted_grid:
        shifted = EulerSolver(steps=4, shift=policy.recommended_shift(4)).default_grid()
        torch.testing.assert_close(shifted, grid, rtol=0, atol=1e-6)
    cond = encode_items(policy, prompt_items(family, prompts))
    latents = EulerSolver(steps=4).sample(
        lambda x, t, c: policy.velocity("current", x, t, c), noise, grid=grid, cond=cond
    )
    expected = family.from_pipeline(captured["latents"], policy.latent_shape)
    torch.testing.assert_close(latents, expected, rtol=0, atol=1e-5)
    decoded = policy.decode(latents)
    frames = (family.call["num_frames"],) if family.output == "frames" else ()
    assert decoded.shape == (len(prompts), *frames, 3, RESOLUTION, RESOLUTION)
    torch.testing.assert_close(decoded, images, rtol=0, atol=1e-5)


# ---- the policy contract ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["lora", "full"])
@pytest.mark.parametrize("name", NAMES)
def test_the_policy_contract_holds_in_lora_and_full_modes(name, mode, model_dirs, tmp_path):
    overrides = {} if mode == "lora" else {"lora": False}
    check_policy(make_policy(BY_NAME[name], model_dirs[name], **overrides), tmp_path / mode)


@pytest.mark.parametrize("name", NAMES)
def test_every_default_lora_target_reaches_a_module(name, model_dirs):
    """peft is silent about a target that matches nothing when another one matches: each of the family's
    default targets (a `*` standing for a block index) must wrap at least one module."""
    import fnmatch

    policy = make_policy(BY_NAME[name], model_dirs[name])
    wrapped = {n.split(".lora_A.")[0] for n in policy.lora.trained if ".lora_A." in n}
    for target in policy.options.lora_targets:
        assert any(fnmatch.fnmatchcase(n, f"*{target}") for n in wrapped), target


@pytest.mark.parametrize("name", NAMES)
def test_cfg_batches_prompts_with_the_empty_prompt(name, model_dirs):
    """CFG concatenates the prompts' conditioning with `null_cond` (variable-length text is padded to one
    length for that): the guided velocity equals the one from two separate calls."""
    from nft_core.sampling import policy_velocity

    policy = make_policy(BY_NAME[name], model_dirs[name])
    x = torch.randn((2, *policy.latent_shape), generator=torch.Generator().manual_seed(0))
    t, cond = torch.tensor([0.9, 0.4]), encode_items(policy, prompt_items(BY_NAME[name], PROMPTS[:2]))
    with torch.no_grad():
        guided = policy_velocity(policy, "current", guidance=3.0)(x, t, cond)
        v_cond = policy.velocity("current", x, t, cond)
        v_null = policy.velocity("current", x, t, null_of(policy, cond))
    torch.testing.assert_close(guided, v_null + 3.0 * (v_cond - v_null), rtol=0, atol=1e-5)


# ---- a short NFT run and nft export -----------------------------------------------------------------
RUN_CONFIG = """
name = "{name}-run"
[policy]
name = "{name}"
model = "{model}"
resolution = {resolution}
max_sequence_length = {tokens}
{policy_extra}
{lora}
[solver]
name = "euler"
steps = {steps}
shift = {shift}
[objective]
kl_weight = 0.0
ema_decay = 0.5
[data]
prompts = "{prompts}"
prompts_per_epoch = 2
images_per_prompt = 16
[train]
epochs = {epochs}
batch_size = 32
lr = {lr}
optimizer_steps_per_epoch = 1
precision = "fp32"
threads = 1
[eval]
prompts = "{prompts}"
images_per_prompt = 8
[eval.solver]
name = "euler"
steps = {steps}
shift = {shift}
[log]
grid_every = 0
progress = false
[[reward]]
{reward}
normalize = "group-zscore"
"""
LORA = "[policy.lora]\nrank = 4\nalpha = 8.0"


def write_run_config(tmp: Path, name: str, folder: Path, steps: int = 3, epochs: int = 6, **extra) -> Path:
    """A run of `epochs` NFT epochs of a rank-4 LoRA on the tiny model, `steps` Euler steps on the grid
    of the policy's `recommended_shift`, rewarded by the family's toy reward; `extra` overrides the
    `policy_extra` lines, `lora`, `shift`, `lr` and `reward` (the `[[reward]]` lines but `normalize`)."""
    family = BY_NAME[name]
    prompts = write_prompts(tmp, family)
    options = family.options(folder)
    config = tmp / f"{name}.toml"
    config.write_text(
        RUN_CONFIG.format(
            name=name,
            model=folder,
            resolution=RESOLUTION,
            tokens=options["max_sequence_length"],
            policy_extra=extra.get("policy_extra", family.run_options),
            lora=extra.get("lora", LORA),
            reward=extra.get("reward", family.reward),
            steps=steps,
            shift=extra.get("shift", make_policy(family, folder).recommended_shift(steps)),
            prompts=prompts,
            epochs=epochs,
            lr=extra.get("lr", 1e-2),
        )
    )
    return config


def write_prompts(tmp: Path, family: Family) -> str:
    """The run's prompt source: a prompt file, or for an editing family an `edit:` JSONL whose prompts
    name source images written beside it."""
    if not family.edit:
        path = tmp / "prompts.txt"
        path.write_text("\n".join(PROMPTS[:2]) + "\n")
        return str(path)
    from torchvision.utils import save_image

    lines = []
    for index, (prompt, source) in enumerate(zip(PROMPTS[:2], source_images(2), strict=True)):
        save_image(source, tmp / f"source-{index}.png")
        lines.append(json.dumps({"prompt": prompt, "image": f"source-{index}.png"}))
    (tmp / "edits.jsonl").write_text("\n".join(lines) + "\n")
    return f"edit:{tmp / 'edits.jsonl'}"


def reward_label(family: Family) -> str:
    """The name of the run's reward, as `summary.json` keys its scores."""
    return family.reward.split('"')[1]


def run_nft(config: Path, out: Path):
    from nft_core.config import load_config
    from nft_core.loop.trainer import Trainer

    trainer = Trainer(load_config(config), out, echo=lambda *_: None)
    return trainer, trainer.run()


@pytest.fixture(scope="module")
def nft_runs(model_dirs, tmp_path_factory, brightness_reward) -> Callable[[str], tuple[Any, dict]]:
    """Each family's 6-epoch NFT run of a LoRA rewarded for brightness, run once on first use."""
    runs: dict[str, tuple[Any, dict]] = {}

    def get(name: str) -> tuple[Any, dict]:
        if name not in runs:
            tmp = tmp_path_factory.mktemp(f"run-{name}")
            runs[name] = run_nft(write_run_config(tmp, name, model_dirs[name]), tmp / "run")
        return runs[name]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_a_six_epoch_nft_run_raises_the_toy_reward(name, nft_runs):
    trainer, summary = nft_runs(name)
    assert summary["status"] == "finished" and summary["optimizer_steps"] == 6
    moved = [float(p.detach().abs().max()) for n, p in trainer.policy.trainable_parameters() if "lora_B" in n]
    assert moved and max(moved) > 0, "LoRA B starts at zero: the update moved it"
    label = reward_label(BY_NAME[name])
    before, after = summary["eval_before"][label]["score"], summary["eval_after"][label]["score"]
    assert after > before, (before, after)  # paired evaluation: the same prompts and noise


@pytest.mark.parametrize("name", NAMES)
def test_nft_export_loads_in_the_stock_pipeline_and_the_merged_folder_equals_lora_on_base(
    name, nft_runs, model_dirs, tmp_path
):
    import diffusers

    from tests._export_check import check_export

    family = BY_NAME[name]
    call = dict(**stock_call(family, PROMPTS[:1]), num_inference_steps=2, height=RESOLUTION, width=RESOLUTION)
    trainer, _ = nft_runs(name)
    pipeline = getattr(diffusers, family.pipeline)
    check_export(trainer.run_dir, model_dirs[name], pipeline, call | family.call, tmp_path, family.output)
    index = json.loads((tmp_path / "merged" / "model_index.json").read_text())
    assert index["_class_name"] == family.pipeline


# ---- FSDP2 on two gloo ranks, one new family --------------------------------------------------------
def test_full_finetuning_sharded_with_fsdp2_on_two_gloo_ranks_matches_one_process(model_dirs, tmp_path):
    """`qwen-image` full fine-tuning, FSDP2 over 2 gloo ranks (each block and the rest sharded) against
    one process: the same trained, old, EMA and optimizer tensors within 1e-5."""
    import diffusers

    from nft_core.state.checkpoints import latest_checkpoint, read_resume_tensors
    from tests._torchrun import finish, nft_command, start

    folder = model_dirs["qwen-image"]
    # the ranks are new processes: a built-in reward, not the test's toy one
    extra = dict(lora="lora = false", reward='name = "jpeg-compressibility"')
    config = write_run_config(tmp_path, "qwen-image", folder, steps=2, epochs=2, **extra)
    common = ["train.adam_eps=1.0", "train.lr=0.05", "eval.baseline_guidance=[]", "log.grid_every=0"]
    common += ["train.threads=1", 'train.parallel="fsdp2"', "data.images_per_prompt=2"]
    finish(start(nft_command(config, tmp_path / "one", 1, [*common, "train.batch_size=4"])))
    output = finish(start(nft_command(config, tmp_path / "two", 2, [*common, "train.batch_size=2"])))
    assert "parameters sharded over 2 ranks" in output
    run = "qwen-image-run"
    folders = [latest_checkpoint(tmp_path / d / run) for d in ("one", "two")]
    one, two = (read_resume_tensors(f) for f in folders)  # two: gathered from its shards
    trained = [k for k in one if k.startswith(("current.", "old.", "ema.", "optimizer."))]
    assert trained and one.keys() == two.keys()
    assert max(float((one[k] - two[k]).abs().max()) for k in trained) <= 1e-5
    base = diffusers.QwenImageTransformer2DModel.from_pretrained(str(folder / "transformer")).state_dict()
    moved = [float((one[f"current.{k}"] - v).abs().max()) for k, v in base.items() if f"current.{k}" in one]
    assert moved and max(moved) > 1e-4  # the update did something to compare


# ---- step-distilled settings: the toy check of docs/flux2.md ----------------------------------------
def test_nft_at_a_step_distilled_models_settings_runs_and_raises_the_toy_reward(model_dirs, tmp_path):
    """FLUX.2 [klein]'s distilled settings (4 steps on the grid of its 4-step shift, no guidance input,
    CFG off) on the tiny random klein: the run trains and raises the toy reward. A random model is not
    distilled, so this shows the mechanics only, not whether a distilled model stays sharp."""
    folder = model_dirs["flux2-klein"]
    trainer, summary = run_nft(write_run_config(tmp_path, "flux2-klein", folder, steps=4), tmp_path / "run")
    assert trainer.policy.transformer.config.guidance_embeds is False
    assert trainer.config.solver.options()["shift"] == pytest.approx(7.024, abs=1e-3)  # 4 steps, 64 tokens
    assert summary["eval_after"]["brightness"]["score"] > summary["eval_before"]["brightness"]["score"]


# ---- the presets of the new families ----------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(
    path
    for pattern in ("qwen-image-*.toml", "flux2-*.toml", "wan-*.toml", "plugins/*.toml")
    for path in (ROOT / "examples").glob(pattern)
)


@pytest.fixture
def vlm_judge_plugin(monkeypatch):
    """The in-tree nft-vlm-judge plugin registered in this process, as `pip install` would (the editing
    preset names its reward), removed afterwards."""
    from nft_core import registry
    from nft_core.plugins import load_plugins

    monkeypatch.syspath_prepend(str(ROOT / "plugins" / "nft-vlm-judge"))
    import nft_vlm_judge.plugin

    manager = load_plugins()
    added = not manager.has_plugin("nft-vlm-judge")
    if added:
        manager.register(nft_vlm_judge.plugin, name="nft-vlm-judge")
    registry.clear_cache()
    yield
    if added:
        manager.unregister(name="nft-vlm-judge")
    registry.clear_cache()


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_the_new_presets_validate_without_loading_weights(preset, monkeypatch, request):
    from typer.testing import CliRunner

    from nft_core.cli.app import build_app
    from nft_policies.base import loading

    if preset.parent.name == "plugins":  # a preset that names a plugin's reward: installed for it
        request.getfixturevalue("vlm_judge_plugin")

    def forbidden(*args, **kwargs):
        raise AssertionError("validation must not load weights")

    monkeypatch.setattr(loading, "load_pipeline", forbidden)
    monkeypatch.setattr(loading, "resolve_folder", forbidden)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(build_app(), ["validate", "--portable", str(preset)])
    assert result.exit_code == 0, result.output
    assert f"policy {preset.stem.split('-')[0].replace('qwen', 'qwen-image')}" in result.output
    text = preset.read_text()
    assert "GPUs:" in text and "estimate" in text  # each names its GPU count and its cost as an estimate


def test_the_presets_name_the_shifts_of_their_grids():
    """FLUX.2's shift depends on the steps: the preset's are `recommended_shift` at 512 px (1024 tokens)."""
    import math

    import tomllib

    from nft_policies.flux2.policy import empirical_mu

    assert {p.stem for p in PRESETS} == {
        "qwen-image-ocr",
        "qwen-image-geneval",
        "flux2-dev-pickscore",
        "wan-t2v-pickscore",
        "qwen-image-edit-vlm-judge",
    }
    config = tomllib.loads((PRESETS[0].parent / "flux2-dev-pickscore.toml").read_text())
    for table in (config["solver"], config["eval"]["solver"]):
        assert table["shift"] == pytest.approx(math.exp(empirical_mu(1024, table["steps"])), abs=1e-3)


def test_the_cache_lever_caches_rollouts_only_and_says_which_transformers_have_none(model_dirs):
    from nft_core.errors import ConfigError
    from nft_policies.levers import CacheLever

    policy = make_policy(BY_NAME["flux"], model_dirs["flux"])
    lever = CacheLever(kind="first-block", threshold=0.5)
    transformer = policy.rollout_networks()[0]
    x = torch.randn((2, *policy.latent_shape), generator=torch.Generator().manual_seed(0))
    t, cond = torch.tensor([0.9, 0.9]), policy.encode_prompts(["a red circle", "a blue square"])
    with torch.no_grad(), lever.rollout(policy):
        assert transformer.is_cache_enabled
        policy.velocity("old", x, t, cond)
    assert not transformer.is_cache_enabled  # the update's forwards are never cached
    assert not lever.lossless
    with pytest.raises(ConfigError, match="cache needs a diffusers transformer with feature caches; SD3"):
        with lever.rollout(make_policy(BY_NAME["sd3"], model_dirs["sd3"])):
            pass
