"""GenEval metadata parsing: the official files parse, malformed lines name file:line and the field."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_DATA

from nft_rewards.geneval.metadata import load_metadata, parse_metadata_line, validate_metadata
from nft_rewards.geneval.scoring import TAGS

DATA = SHARED_DATA / "geneval"


@pytest.mark.parametrize(
    ("name", "lines"), [("evaluation_metadata.jsonl", 553), ("test_metadata.jsonl", 2212)]
)
def test_official_files_parse(name, lines):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    items = load_metadata(path)
    assert len(items) == lines
    assert {item["tag"] for item in items} == set(TAGS)
    for item in items:
        if item["tag"] == "counting":
            (include,) = item["include"]
            assert item["exclude"] == [{"class": include["class"], "count": include["count"] + 1}]


GOOD = {
    "tag": "position",
    "include": [{"class": "laptop", "count": 1}, {"class": "cow", "count": 1, "position": ["right of", 0]}],
    "prompt": "a photo of a cow right of a laptop",
}


def test_good_line_round_trips():
    assert parse_metadata_line(json.dumps(GOOD), "x.jsonl:1") == GOOD


def mutate(**changes):
    data = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "f.jsonl:7: invalid JSON"),
        ("[1, 2]", "f.jsonl:7: expected a JSON object, got list"),
        (mutate(tag=None), "f.jsonl:7: tag: missing"),
        (mutate(tag="counting_objects"), "f.jsonl:7: tag: must be one of"),
        (mutate(prompt=3), "f.jsonl:7: prompt: expected a string"),
        (mutate(include=None), "f.jsonl:7: include: missing"),
        (mutate(include=[]), "f.jsonl:7: include: expected a non-empty list"),
        (mutate(include=[{"count": 1}]), r"f.jsonl:7: include\[0\].class: expected a non-empty string"),
        (
            mutate(include=[{"class": "cow", "count": 0}]),
            r"f.jsonl:7: include\[0\].count: expected an integer",
        ),
        (mutate(include=[{"class": "cow", "count": "2"}]), r"include\[0\].count: expected an integer >= 1"),
        (mutate(include=[{"class": "cow", "count": True}]), r"include\[0\].count"),
        (
            mutate(include=[{"class": "cow", "count": 1, "color": "teal"}]),
            r"include\[0\].color: must be one of",
        ),
        (
            mutate(include=[{"class": "cow", "count": 1, "size": 3}]),
            r"include\[0\]: unknown key\(s\) \['size'\]",
        ),
        (mutate(include=["cow"]), r"include\[0\]: expected an object"),
        (
            mutate(include=[{"class": "a", "count": 1}, {"class": "b", "count": 1, "position": ["near", 0]}]),
            r"f.jsonl:7: include\[1\].position: relation must be one of",
        ),
        (
            mutate(
                include=[{"class": "a", "count": 1}, {"class": "b", "count": 1, "position": ["above", 1]}]
            ),
            r"include\[1\].position: target index must be an integer naming an earlier include clause "
            r"\(0..0\)",
        ),
        (
            mutate(include=[{"class": "b", "count": 1, "position": ["above"]}]),
            r"include\[0\].position: expected \[relation, index\]",
        ),
        (mutate(exclude={"class": "cow"}), "f.jsonl:7: exclude: expected a list"),
        (mutate(exclude=[{"class": "cow", "count": 2, "color": "red"}]), r"exclude\[0\]: unknown key"),
        (mutate(exclude=[{"class": "cow"}]), r"exclude\[0\].count"),
    ],
)
def test_malformed_lines_name_file_line_and_field(text, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_metadata_line(text, "f.jsonl:7")
    assert str(info.value).startswith("f.jsonl:7: ")


def test_load_metadata_names_the_line(tmp_path):
    path = tmp_path / "meta.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + mutate(tag="bogus") + "\n")
    with pytest.raises(ValueError, match=rf"{path}:3: tag: must be one of"):
        load_metadata(path)
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps(GOOD))
    assert load_metadata(path) == [GOOD, GOOD]


def test_validate_metadata_in_memory():
    assert validate_metadata(dict(GOOD, extra="kept"), "metadata[0]")["extra"] == "kept"
    with pytest.raises(ValueError, match=r"^metadata\[3\]: include: missing"):
        validate_metadata({"tag": "colors"}, "metadata[3]")
