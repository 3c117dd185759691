"""Config validation: unknown keys, wrong types and unknown names give one line naming the TOML path."""

from __future__ import annotations

from pathlib import Path

import pytest

from nft_core.config import apply_override, load_config, parse_override
from nft_core.errors import ConfigError

DEFAULT = Path(__file__).resolve().parents[1] / "examples" / "shapes-geneval.toml"


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_fast_config_loads(fast_config):
    config = load_config(fast_config)
    assert config.solver.options() == {"steps": 3}
    assert config.reward[0].normalize == "group-zscore"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lrr=1", "train.lrr: unknown key; allowed: adam_eps, batch_size"),
        ("train.lr='fast'", "train.lr: Input should be a valid number"),
        ("reward[0].name='nope'", "reward[0].name: unknown reward 'nope'; available:"),
        (
            "reward[0].normalize='minmax'",
            "reward[0].normalize: unknown normalization 'minmax'; allowed: none",
        ),
        ("reward[0].options.outcome='best'", "reward[0].options.outcome:"),
        ("solver.name='rk9'", "solver.name: unknown solver 'rk9'; available: "),
        ("solver.stepz=3", "solver.stepz: unknown key"),
        ("objective.beta=-1", "objective.beta: Input should be greater than 0"),
        ("objective.old_decay='cosine'", "objective.old_decay:"),
        ("policy.checkpointt='x'", "policy.checkpointt: unknown key"),
        ("data.prompts_per_epoch=0", "data.prompts_per_epoch: Input should be greater than or equal to 1"),
        ("train.precision='fp8'", "train.precision: Input should be 'auto', 'fp32', 'bf16' or 'fp16'"),
    ],
)
def test_errors_name_the_path(fast_config, override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(fast_config, [override])
    message = str(error.value)
    assert expected in message, message
    assert "\n" not in message
    assert message.startswith(str(fast_config))


def test_unknown_reward_lists_available(fast_config):
    with pytest.raises(ConfigError, match="shapes-geneval"):
        load_config(fast_config, ["reward[0].name='nope'"])


def test_missing_reward_table(tmp_path):
    with pytest.raises(ConfigError, match="reward: required key is missing"):
        load_config(write(tmp_path, "name = 'x'\n"))


def test_invalid_toml_names_file(tmp_path):
    with pytest.raises(ConfigError, match="c.toml: invalid TOML"):
        load_config(write(tmp_path, "name = \n"))


def test_overrides_parse_toml_literals():
    assert parse_override("train.lr=1e-4") == (["train", "lr"], 1e-4)
    assert parse_override("reward[1].weight=2") == (["reward", 1, "weight"], 2)
    assert parse_override("data.prompts=shapes:all") == (["data", "prompts"], "shapes:all")
    assert parse_override("eval.baseline_guidance=[1.5, 3]") == (["eval", "baseline_guidance"], [1.5, 3])
    data = {"reward": [{"name": "a"}]}
    apply_override(data, ["reward", 0, "weight"], 2.0)
    apply_override(data, ["train", "lr"], 0.1)
    assert data == {"reward": [{"name": "a", "weight": 2.0}], "train": {"lr": 0.1}}
    with pytest.raises(ConfigError, match="out of range"):
        apply_override(data, ["reward", 3, "weight"], 1)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train.lr")


def test_two_outcomes_of_one_reward_need_an_alias(fast_config):
    text = fast_config.read_text() + '[[reward]]\nname = "shapes-geneval"\noptions = { outcome = "strict" }\n'
    fast_config.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(fast_config)
    assert str(error.value) == (
        f"{fast_config}: reward[1]: a second reward named 'shapes-geneval'; give it an `alias` "
        "(e.g. two outcomes of one reward)"
    )
    config = load_config(fast_config, ["reward[1].alias='strict'"])
    assert [r.label for r in config.reward] == ["shapes-geneval", "strict"]


def test_set_appends_or_replaces_an_array_element(fast_config):
    config = load_config(fast_config, ["reward[1]={name='shapes-geneval', alias='strict'}"])
    assert [r.label for r in config.reward] == ["shapes-geneval", "strict"]
    config = load_config(fast_config, ["reward[0]={name='shapes-geneval', weight=2.0}"])
    assert [r.weight for r in config.reward] == [2.0]
    with pytest.raises(ConfigError, match=r"reward\[3\]: index 3 is out of range \(allowed: 0 to 1\)"):
        load_config(fast_config, ["reward[3]={name='shapes-geneval'}"])


def test_a_renamed_table_says_its_new_name(fast_config):
    with pytest.raises(ConfigError, match=r"eval.sampler: renamed to eval.solver \(write \[eval.solver\]\)$"):
        load_config(fast_config, ["eval.sampler.steps=4"])
    fast_config.write_text(fast_config.read_text().replace("[solver]", "[sampler]"))
    with pytest.raises(ConfigError, match=r"fast.toml: sampler: renamed to solver \(write \[solver\]\)$"):
        load_config(fast_config)


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ("[]", "give at least one time"),
        ("[0.5, 1.5]", r"times must lie in \(0, 1\], got 1.5"),
        ("'grid'", r'expected "collection" or a list of times in \(0, 1\] \(got .grid.\)'),
    ],
)
def test_training_times_are_collection_or_a_list(fast_config, times, message):
    assert load_config(fast_config).objective.times == "collection"
    assert load_config(fast_config, ["objective.times=[0.9, 0.5]"]).objective.times == [0.9, 0.5]
    with pytest.raises(ConfigError, match=f"objective.times: {message}"):
        load_config(fast_config, [f"objective.times={times}"])


def test_objective_options_are_the_objectives_own(fast_config):
    config = load_config(fast_config, ["objective.adv_clip=3.0", "objective.beta=0.5"])
    assert config.objective.options() == {"adv_clip": 3.0, "beta": 0.5}
    with pytest.raises(ConfigError, match="objective.threshold: unknown key; allowed: adv_clip, beta"):
        load_config(fast_config, ["objective.threshold=0.2"])
    rft = load_config(fast_config, ['objective.name="rft"', "objective.threshold=0.2"])
    assert rft.objective.options() == {"threshold": 0.2}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("=1", r"--set '=1': the key must start with a table or key name"),
        ("[0]=1", r"--set '\[0\]=1': the key must start with a table or key name"),
        ("reward.weight=1", r"reward.weight: reward is an array of tables; give an index, e.g. reward\[0\]"),
        ("train.lr.x=1", r"--set train.lr.x: train.lr is a value, not a table with keys"),
        ("train.lr[0]=1", r"--set train.lr\[0\]: train.lr is not an array, so it has no \[0\]"),
    ],
)
def test_malformed_overrides_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEFAULT, [override])


def test_a_folder_or_a_binary_file_as_the_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="a folder, not a TOML config file"):
        load_config(tmp_path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ConfigError, match=r"binary.toml: not a text file \(a TOML config is UTF-8 text\)"):
        load_config(binary)
