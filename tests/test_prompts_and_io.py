"""Prompt sources (files, registered `shapes:` splits), atomic writes, the paired tag-mean difference."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import SHARED_DATA

from nft_core.errors import ConfigError, UserError
from nft_core.io import atomic_write_text
from nft_core.loop.evaluation import paired_difference
from nft_core.loop.prompts import load_prompts, read_prompt_file, weighted_tag_cycle


def test_text_and_jsonl_files(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n\n  a dog  \n")
    assert [i.prompt for i in read_prompt_file(tmp_path / "p.txt")] == ["a cat", "a dog"]
    (tmp_path / "p.jsonl").write_text('{"tag": "single_object", "prompt": "a cat", "include": []}\n')
    item = read_prompt_file(tmp_path / "p.jsonl")[0]
    assert item.prompt == "a cat" and item.metadata["tag"] == "single_object"
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: each line must be an object with a string `prompt`"):
        read_prompt_file(tmp_path / "bad.jsonl")


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared prompt data not present")
def test_real_geneval_metadata_is_a_prompt_source():
    items = load_prompts(str(SHARED_DATA / "geneval" / "evaluation_metadata.jsonl"))
    assert len(items) == 553 and all(i.metadata["tag"] for i in items)
    assert len(load_prompts(str(SHARED_DATA / "drawbench" / "test.txt"))) == 1000


def test_registered_source_and_errors():
    train = load_prompts("shapes:train")
    heldout = {i.prompt for i in load_prompts("shapes:heldout")}
    assert heldout and not heldout & {i.prompt for i in train}
    evaluation = load_prompts("shapes:eval")
    counts = Counter(i.metadata["tag"] for i in evaluation)
    assert min(counts.values()) >= 48
    with pytest.raises(ConfigError, match=r"data.prompts: 'nowhere' is neither a prompt file"):
        load_prompts("nowhere")
    with pytest.raises(UserError, match="unknown split"):
        load_prompts("shapes:bogus")


def test_paired_difference_is_the_gap_of_official_scores_with_its_standard_error():
    tags = ["a", "a", "a", "a", "b", "b"]
    a = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    b = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    gap, error = paired_difference(tags, a, b)
    assert gap == pytest.approx(tag_mean(tags, a) - tag_mean(tags, b))
    # differences: tag a [1, 0, 0, 1] (mean 0.5, sample var 1/3), tag b [0, -1] (mean -0.5, var 0.5)
    assert gap == pytest.approx((0.5 - 0.5) / 2)
    assert error == pytest.approx(((1 / 3) / 4 + 0.5 / 2) ** 0.5 / 2)
    assert paired_difference(tags, a, a) == (0.0, 0.0)


def tag_mean(tags, values):
    """GenEval's aggregation, by hand: the mean over tags of the per-tag means."""
    means = [values[[t == tag for t in tags]].mean().item() for tag in dict.fromkeys(tags)]
    return sum(means) / len(means)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old")

    def broken_replace(*_args):
        raise OSError("disk full")

    monkeypatch.setattr("nft_core.io.os.replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_weighted_tag_cycle_spreads_heavy_tags_and_keeps_order_for_equal_weights():
    assert weighted_tag_cycle(["a", "b", "c"], {}) == ["a", "b", "c"]
    cycle = weighted_tag_cycle(["a", "b", "c"], {"b": 3})
    assert sorted(cycle) == ["a", "b", "b", "b", "c"]
    assert cycle == ["b", "a", "b", "c", "b"]  # never two heavy draws bunched at one end
    assert weighted_tag_cycle(["x"], {"x": 4}) == ["x"] * 4


def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    import os
    import stat

    from nft_core.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


def test_json_files_stay_strict_json_with_non_finite_numbers_flagged(tmp_path):
    import json
    import math

    from nft_core.io import append_jsonl, atomic_write_json

    record = {"loss": math.nan, "ok": 1.5, "scores": {"a": [1.0, math.inf]}}
    append_jsonl(tmp_path / "m.jsonl", record)
    atomic_write_json(tmp_path / "s.json", record)
    for text in ((tmp_path / "m.jsonl").read_text(), (tmp_path / "s.json").read_text()):
        parsed = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
        assert parsed == {
            "loss": None,
            "ok": 1.5,
            "scores": {"a": [1.0, None]},
            "non_finite": ["loss", "scores.a[1]"],
        }
    assert record["loss"] != record["loss"]  # the caller's record is not modified


def test_an_output_folder_under_a_file_or_without_write_permission_is_refused(tmp_path):
    import os

    from nft_core.errors import UserError
    from nft_core.io import check_output_folder

    check_output_folder(tmp_path / "new" / "runs")  # can be made: fine
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match=r"--out .*afile/runs: .*afile is a file, not a folder"):
        check_output_folder(tmp_path / "afile" / "runs")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: nothing to check there
            pytest.skip("running as a user that may write anywhere")
        with pytest.raises(UserError, match="is not writable"):
            check_output_folder(locked / "runs")
    finally:
        locked.chmod(0o700)
