"""The shapes-tiny policy, CFG sampling, near-miss label noise and deterministic pretraining."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from nft_core.errors import UserError
from nft_core.sampling import policy_velocity
from nft_shapes.grammar import TAGS, train_prompts
from nft_shapes.model import TinyUNet, TinyUNetConfig, grid_embedding
from nft_shapes.policy import (
    MAX_TOKENS,
    SHIPPED_CHECKPOINT,
    TOKENS,
    ShapesTinyPolicy,
    encode_tokens,
    load_network,
)
from nft_shapes.pretrain import (
    SECOND_STAGE,
    PretrainConfig,
    draw_tag,
    draw_times,
    near_miss,
    pretrain,
    recipe,
    recorded_config,
    scene_metadata,
    snapshot_path,
)
from nft_shapes.render import render_scene
from nft_shapes.reward import shapes_geneval


def test_tokens_keep_word_order_and_mark_unknown_words():
    cond = encode_tokens(["a circle left of a square", "a square left of a circle", "a zebra"])
    assert not torch.equal(cond["tokens"][0], cond["tokens"][1])
    assert sorted(cond["tokens"][0].tolist()) == sorted(cond["tokens"][1].tolist())
    assert cond["tokens"][2, 1].item() == 2  # <unk>
    assert cond["mask"].sum(1).tolist() == [6, 6, 2]


def _same_word_at_two_positions(seed: int, token_init_std: float) -> float:
    torch.manual_seed(seed)
    config = TinyUNetConfig(vocab_size=len(TOKENS), max_tokens=MAX_TOKENS, token_init_std=token_init_std)
    text = TinyUNet(config).text
    cond = encode_tokens(["a circle left of a square", "a square left of a circle"])
    hidden, _ = text(cond["tokens"], cond["mask"])
    circle_first, circle_last = hidden[0, 1], hidden[1, 5]
    return float((circle_first - circle_last).norm() / circle_first.norm())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fresh_text_encoder_sees_word_order(seed):
    # Token embeddings at PyTorch's default scale (norm ~8) drown the positions (~0.16): the same word at
    # two positions encodes within 3%, so "left of" and colour binding are hard to learn. At 0.02 (the
    # default for new networks) the two scales match and word order shows.
    assert _same_word_at_two_positions(seed, token_init_std=0.02) > 0.2
    assert _same_word_at_two_positions(seed, token_init_std=1.0) < 0.05
    text = TinyUNet(TinyUNetConfig(vocab_size=len(TOKENS), max_tokens=MAX_TOKENS)).text
    ratio = text.embed.weight.norm(dim=1).mean() / text.positions.norm(dim=1).mean()
    assert 0.5 < float(ratio) < 2.0


def test_pretraining_defaults_are_the_shipped_recipe():
    recorded = json.loads(SHIPPED_CHECKPOINT.with_suffix(".json").read_text())
    (first, first_out), (second, out) = recipe(PretrainConfig(), SHIPPED_CHECKPOINT)
    assert first == PretrainConfig() and out == SHIPPED_CHECKPOINT and second.init == str(first_out)
    assert recorded_config(second) == recorded["config"]
    assert recorded["config"]["init"] == "shapes-tiny-stage1.safetensors"
    # the first stage is the checkpoint shipped before the second stage existed (commit 5d25b9c)
    assert recorded["init_sha256"] == "53b474caa467aa2c9f6b5482aab2ffe80304fe707d013fca782df04112b5f774"
    assert recorded["threads"] == 2  # the `nft shapes pretrain` default: bitwise reproducible on 2 threads
    shipped = load_network(SHIPPED_CHECKPOINT).config
    assert (shipped.text_encoder, shipped.text_layers, shipped.position_embedding) == ("gru", 1, True)


def _gru_text(seed: int):
    torch.manual_seed(seed)
    config = TinyUNetConfig(
        vocab_size=len(TOKENS), max_tokens=MAX_TOKENS, text_encoder="gru", token_init_std=1.0
    )
    return TinyUNet(config).text


@pytest.mark.parametrize("seed", [0, 1])
def test_gru_text_encoder_sees_word_order_and_ignores_padding(seed):
    text = _gru_text(seed)
    prompts = ["a red circle and a blue square", "a blue circle and a red square", "a circle"]
    cond = encode_tokens(prompts)
    hidden, pooled = text(cond["tokens"], cond["mask"])
    # the same word in two contexts, and two prompts with the same bag of words, differ from the start
    assert float((hidden[0, 2] - hidden[1, 2]).norm() / hidden[0, 2].norm()) > 0.1
    assert float((pooled[0] - pooled[1]).norm() / pooled[0].norm()) > 0.05
    # the backward direction starts at each prompt's last real word: more padding changes nothing
    padded = encode_tokens(prompts, max_tokens=MAX_TOKENS + 4)
    hidden_padded, pooled_padded = text(padded["tokens"], padded["mask"])
    torch.testing.assert_close(hidden_padded[:, :MAX_TOKENS][cond["mask"]], hidden[cond["mask"]])
    torch.testing.assert_close(pooled_padded, pooled)


def test_unknown_text_encoder_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"text_encoder: 'lstm' is not one of \['transformer', 'gru'\]"):
        TinyUNetConfig(vocab_size=4, text_encoder="lstm")


def test_tag_weights_set_how_often_each_tag_is_drawn():
    rng = np.random.default_rng(0)
    probabilities = np.array([0.0, 0.0, 0.25, 0.0, 0.75, 0.0])
    counts = np.bincount([draw_tag(rng, probabilities) for _ in range(4000)], minlength=6)
    assert counts[[0, 1, 3, 5]].sum() == 0
    assert abs(counts[4] / 4000 - 0.75) < 0.03
    uniform = np.bincount([draw_tag(rng, None) for _ in range(6000)], minlength=6)
    assert uniform.min() > 900
    with pytest.raises(ValueError, match="tag_weights"):
        PretrainConfig(tag_weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="tag_weights"):
        PretrainConfig(tag_weights=(0.0,) * 6)


def test_uniform_times_keep_the_shipped_random_stream_and_logit_normal_centres_on_its_mean():
    uniform = draw_times(PretrainConfig(batch_size=5), torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        uniform, torch.rand(5, generator=torch.Generator().manual_seed(3)), rtol=0, atol=0
    )
    config = PretrainConfig(batch_size=20000, timesteps="logit-normal", logit_mean=0.5, logit_std=1.0)
    t = draw_times(config, torch.Generator().manual_seed(0))
    assert 0 < float(t.min()) and float(t.max()) < 1
    logits = torch.logit(t.double())
    assert abs(float(logits.mean()) - 0.5) < 0.03 and abs(float(logits.std()) - 1.0) < 0.03
    # SD3's point: more of the steps land at mid noise than under uniform sampling
    assert float(((t > 0.3) & (t < 0.7)).double().mean()) > 0.45


def test_grid_position_code_tells_every_cell_apart():
    code = grid_embedding(8, 32).flatten(1).T  # [64 cells, 32]
    distances = torch.cdist(code, code) + torch.eye(64) * 1e9
    assert float(distances.min()) > 0.1
    # half the channels depend on x only, half on y only
    assert torch.equal(grid_embedding(8, 32)[:16, 0], grid_embedding(8, 32)[:16, 5])
    assert torch.equal(grid_embedding(8, 32)[16:, :, 0], grid_embedding(8, 32)[16:, :, 5])


def test_position_code_is_off_for_configs_saved_without_it():
    config = TinyUNetConfig(vocab_size=len(TOKENS), position_embedding=True)
    saved = config.to_dict()
    del saved["position_embedding"]  # checkpoints written before the option existed
    assert TinyUNetConfig.from_dict(saved).position_embedding is False
    with_code = TinyUNet(config).state_dict()
    without = TinyUNet(TinyUNetConfig.from_dict(saved)).state_dict()
    assert set(with_code) - set(without) == {
        "position2.project.weight",
        "position2.project.bias",
        "position3.project.weight",
        "position3.project.bias",
    }


def test_shipped_checkpoint_is_small_and_loads():
    assert SHIPPED_CHECKPOINT.stat().st_size < 6_000_000
    model = load_network(SHIPPED_CHECKPOINT)
    assert 1_000_000 < sum(p.numel() for p in model.parameters()) < 3_000_000


def test_a_missing_shipped_checkpoint_names_the_reproducing_command(tmp_path, monkeypatch):
    import nft_shapes.policy as shapes_policy

    monkeypatch.setattr(shapes_policy, "SHIPPED_CHECKPOINT", tmp_path / "shipped.safetensors")
    with pytest.raises(UserError, match="nft shapes pretrain"):
        shapes_policy.load_network(tmp_path / "shipped.safetensors")


def test_views_refresh_and_cfg(tiny_checkpoint):
    policy = ShapesTinyPolicy(str(tiny_checkpoint))
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(0.1)
    old = [p.clone() for p in policy.old_model.parameters()]
    policy.refresh_old(0.25)
    for before, after, new in zip(old, policy.old_model.parameters(), policy.model.parameters(), strict=True):
        torch.testing.assert_close(after, 0.25 * before + 0.75 * new)
    x, t = torch.randn(3, 3, 32, 32), torch.full((3,), 0.5)
    cond = policy.encode_prompts(["a circle", "two squares", "a red circle"])
    v_cond = policy.velocity("current", x, t, cond)
    v_null = policy.velocity("current", x, t, policy.null_cond(3))
    guided = policy_velocity(policy, "current", guidance=3.0)(x, t, cond)
    torch.testing.assert_close(guided, v_null + 3.0 * (v_cond - v_null), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(policy_velocity(policy, "current")(x, t, cond), v_cond)
    with pytest.raises(ValueError, match="allowed: current, old, reference"):
        policy.velocity("ema", x, t, cond)


def test_near_miss_renders_fail_the_original_prompt():
    # position near-misses use another relation, which a diagonal placement can still satisfy: excluded here
    rng = np.random.default_rng(0)
    reward = shapes_geneval(outcome="strict")
    items = [item for item in train_prompts() if item.metadata["tag"] != "position"]
    images, metas = [], []
    for item in items:
        perturbed = near_miss(item.metadata, rng)
        assert perturbed != item.metadata and perturbed["tag"] == item.metadata["tag"]
        images.append(torch.from_numpy(render_scene(perturbed, rng)[0]))
        metas.append(item.metadata)
    scores = reward(torch.stack(images), [i.prompt for i in items], metas).scores
    assert scores.max().item() == 0.0, [items[i].prompt for i in torch.nonzero(scores).flatten().tolist()]


def test_label_noise_touches_only_its_tags_and_keeps_the_older_stream():
    items = {item.metadata["tag"]: item for item in train_prompts()}
    everywhere = PretrainConfig(label_noise=0.5, label_noise_tags=TAGS)
    small = PretrainConfig(label_noise=0.5, label_noise_tags=("counting", "colors"))
    a, b, c = (np.random.default_rng(0) for _ in range(3))
    changed = dict.fromkeys(TAGS, 0)
    for _ in range(100):
        for tag, item in items.items():
            meta = item.metadata
            noisy = scene_metadata(meta, a, everywhere)
            older = near_miss(meta, b) if b.random() < 0.5 else meta  # the recipe before label_noise_tags
            assert noisy == older
            changed[tag] += noisy != meta
            scene = scene_metadata(meta, c, small)
            assert scene is meta or (tag in small.label_noise_tags and scene != meta)
    assert all(30 <= n <= 70 for n in changed.values()), changed
    with pytest.raises(ValueError, match=r"label_noise_tags: \['pose'\] not among the tags"):
        PretrainConfig(label_noise_tags=("pose",))


def test_keep_order_near_misses_never_reverse_or_swap():
    axis = {"left of": "horizontal", "right of": "horizontal", "above": "vertical", "below": "vertical"}
    position = [item.metadata for item in train_prompts() if item.metadata["tag"] == "position"]
    colours = [item.metadata for item in train_prompts() if item.metadata["tag"] == "color_attr"]
    rng = np.random.default_rng(0)
    for style, reversals, swaps in (("keep-order", 0, 0), ("any", 0, 0)):
        for meta in position * 20:
            relation = meta["include"][1]["position"][0]
            moved = near_miss(meta, rng, style)["include"][1]["position"][0]
            assert moved != relation
            if style == "keep-order":
                assert axis[moved] != axis[relation], (relation, moved)
            reversals += axis[moved] == axis[relation]
        for meta in colours * 6:
            before = [clause["color"] for clause in meta["include"]]
            after = [clause["color"] for clause in near_miss(meta, rng, style)["include"]]
            if style == "keep-order":  # one clause gets a colour the prompt does not name
                assert sum(a != b for a, b in zip(before, after, strict=True)) == 1
                assert len(set(after) - set(before)) == 1, (before, after)
            swaps += after == before[::-1]
        if style == "any":  # the older style does reverse and swap, a third and a half of the time
            assert 75 <= reversals <= 140 and 115 <= swaps <= 175, (reversals, swaps)
    with pytest.raises(ValueError, match=r"near_misses: 'mirror' is not one of \['any', 'keep-order'\]"):
        PretrainConfig(near_misses="mirror")


def _same_weights(a: Path, b: Path) -> bool:
    """Whether two checkpoint files hold bitwise the same weights."""
    pairs = zip(load_network(a).state_dict().values(), load_network(b).state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def test_second_stage_starts_from_its_init_checkpoint(tmp_path):
    tiny = dataclasses.replace(PretrainConfig(), steps=1, batch_size=4, warmup_steps=1, channels=(8, 16, 16))
    first = tmp_path / "first.safetensors"
    pretrain(tiny, first, progress=False)
    # with lr 0 the weights never move, so the second stage's EMA is exactly the file it started from
    still = dataclasses.replace(tiny, steps=3, init=str(first), lr=0.0, seed=1, label_noise=1.0)
    pretrain(still, tmp_path / "second.safetensors", progress=False)
    assert _same_weights(first, tmp_path / "second.safetensors")
    recorded = json.loads((tmp_path / "second.json").read_text())
    assert recorded["config"]["init"] == "first.safetensors"  # by name: the path is local
    assert recorded["init_sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    moving = dataclasses.replace(still, lr=1e-3)
    pretrain(moving, tmp_path / "third.safetensors", progress=False)
    assert not _same_weights(first, tmp_path / "third.safetensors")
    other = dataclasses.replace(still, channels=(8, 16, 32))
    with pytest.raises(UserError, match="init: .*first.safetensors has the architecture"):
        pretrain(other, tmp_path / "fourth.safetensors", progress=False)
    assert not (tmp_path / "fourth.safetensors").exists()


def test_pretraining_is_deterministic(tmp_path):
    config = dataclasses.replace(
        PretrainConfig(), steps=2, batch_size=4, warmup_steps=1, channels=(8, 16, 16)
    )
    first = pretrain(config, tmp_path / "a.safetensors", progress=False)
    second = pretrain(config, tmp_path / "b.safetensors", progress=False)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    assert _same_weights(tmp_path / "a.safetensors", tmp_path / "b.safetensors")


def test_pretraining_snapshot_equals_the_shorter_run(tmp_path):
    """Nothing in the recipe depends on the total step count, so a snapshot is a reproducible checkpoint."""
    tiny = dataclasses.replace(PretrainConfig(), batch_size=4, warmup_steps=2, channels=(8, 16, 16))
    pretrain(dataclasses.replace(tiny, steps=5), tmp_path / "long.safetensors", progress=False, snapshots=[3])
    pretrain(dataclasses.replace(tiny, steps=3), tmp_path / "short.safetensors", progress=False)
    snapshot = snapshot_path(tmp_path / "long.safetensors", 3)
    assert _same_weights(snapshot, tmp_path / "short.safetensors")
    assert not _same_weights(snapshot, tmp_path / "long.safetensors")
    recorded = json.loads(snapshot_path(tmp_path / "long.safetensors", 3).with_suffix(".json").read_text())
    assert recorded["config"]["steps"] == 3


def test_channels_last_is_the_same_function(tiny_checkpoint):
    fast = ShapesTinyPolicy(str(tiny_checkpoint), channels_last=True)
    plain = ShapesTinyPolicy(str(tiny_checkpoint), channels_last=False)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.1, 0.4, 0.7, 1.0])
    cond = fast.encode_prompts(["a red circle", "two squares", "a circle left of a square", "a triangle"])
    assert fast.model.stem.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast.velocity("current", x, t, cond), plain.velocity("current", x, t, cond))


@pytest.mark.parametrize(
    ("args", "stages"),
    [
        ([], 2),
        (["--no-second-stage"], 1),
        (["--init", "base.safetensors"], 1),
        (["--steps", "10", "--snapshots", "5"], 2),
    ],
)
def test_pretrain_command_runs_the_shipped_two_stages(tmp_path, monkeypatch, args, stages):
    from nft_core.cli.app import main

    calls = []
    monkeypatch.setattr(
        "nft_shapes.pretrain.pretrain", lambda config, out, **kw: calls.append((config, out, kw))
    )
    out = tmp_path / "ck.safetensors"
    monkeypatch.setattr("sys.argv", ["nft", "shapes", "pretrain", "--out", str(out), *args])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0
    assert [path for _, path, _ in calls] == [tmp_path / "ck-stage1.safetensors", out][-stages:]
    first = calls[0][0]
    assert first.init == ("base.safetensors" if "--init" in args else None)
    assert calls[0][2]["snapshots"] == ([5] if "--snapshots" in args else [])
    if stages == 2:
        second = calls[1][0]
        stage1 = str(tmp_path / "ck-stage1.safetensors")
        assert second == dataclasses.replace(first, init=stage1, **SECOND_STAGE)
        assert calls[1][2]["snapshots"] == ()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tag-weights", "1,2"], r"tag_weights: \[1.0, 2.0\] must be 6 non-negative numbers"),
        (["--tag-weights", "1,x,1,1,1,1"], "'1,x,1,1,1,1': expected six comma-separated"),
        (["--text-encoder", "lstm"], "text_encoder: 'lstm' is not one of"),
        (["--timesteps", "cosine"], r"timesteps: 'cosine' is not one of \['uniform', 'logit-normal'\]"),
        (["--timesteps", "logit-normal", "--logit-std", "0"], "logit_std: 0.0 must be > 0"),
        (["--near-misses", "mirror"], r"near_misses: 'mirror' is not one of \['any', 'keep-order'\]"),
        (["--label-noise", "1.5"], r"label_noise: 1.5 must be in \[0, 1\]"),
        (["--init", "missing.safetensors"], "shapes-tiny checkpoint not found: missing.safetensors"),
    ],
)
def test_pretrain_command_refuses_bad_options_with_one_line(tmp_path, monkeypatch, capsys, args, message):
    from nft_core.cli.app import main

    out = tmp_path / "ck.safetensors"
    monkeypatch.setattr("sys.argv", ["nft", "shapes", "pretrain", "--out", str(out), *args])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(message, lines[0]), lines[0]
    assert not any(tmp_path.iterdir())


def test_a_mistyped_checkpoint_path_says_check_the_path_not_pretrain(tmp_path):
    from nft_core.errors import UserError
    from nft_shapes.policy import load_network

    with pytest.raises(UserError, match="check the path") as error:
        load_network(tmp_path / "typo.safetensors")
    assert "pretrain" not in str(error.value)
