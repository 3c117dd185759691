"""Plugins installed with pip: the examples, two template-generated plugins and a broken one.

They are pip-installed into a temporary `--target` folder that only the subprocesses of these tests
see (through PYTHONPATH), so nothing leaks into this process or into other tests. The subprocesses
check that `nft plugins` lists them, that their own test suites pass once installed, and that
`nft run` on the shapes world works with a plugin reward and a plugin solver while a broken plugin is
reported by name with its error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nft_core.cli.scaffold import scaffold_plugin

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
EXAMPLES = ("nft-vlm-judge", "nft-solver-midpoint")
GENERATED = {"nft-colorfulness": "reward", "nft-tiny-euler": "solver"}
BROKEN = "nft-broken-example"
ALL = (*EXAMPLES, *GENERATED, BROKEN)
IGNORED = shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "dist")


@dataclass
class Installed:
    """Where the plugins' sources were copied and where pip installed them."""

    sources: dict[str, Path]
    site: Path

    def env(self, load: str | None) -> dict[str, str]:
        """The environment of a subprocess that sees the installed plugins; `load` is NFT_LOAD_PLUGINS."""
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.site), os.environ.get("PYTHONPATH")]))
        env.pop("NFT_LOAD_PLUGINS", None)
        if load is not None:
            env["NFT_LOAD_PLUGINS"] = load
        return env


def write_broken_plugin(root: Path) -> Path:
    """A distribution whose entry-point module raises ImportError on import."""
    folder = root / BROKEN
    folder.mkdir()
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{BROKEN}"\nversion = "0.0.1"\n'
        f'[project.entry-points.nft]\n{BROKEN} = "nft_broken_example"\n'
        '[tool.setuptools]\npy-modules = ["nft_broken_example"]\n'
    )
    (folder / "nft_broken_example.py").write_text(
        'raise ImportError("nft-broken-example needs the library `missing_dependency`")\n'
    )
    return folder


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("plugins")
    sources = {}
    for name in EXAMPLES:  # copies, so that building never writes into the repository
        sources[name] = Path(shutil.copytree(PLUGINS / name, root / name, ignore=IGNORED))
    for name, kind in GENERATED.items():
        sources[name] = scaffold_plugin(name, kind, root)
    sources[BROKEN] = write_broken_plugin(root)
    site = root / "site-packages"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--no-compile", "--disable-pip-version-check", "--target", str(site)]
    result = subprocess.run(
        [*command, *map(str, sources.values())], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Installed(sources, site)


def nft(installed: Installed, *args: str, load: str | None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nft_core.cli", *args],
        env=installed.env(load),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_nft_plugins_lists_installed_plugins_and_reports_the_broken_one(installed):
    result = nft(installed, "plugins", load=",".join(ALL))
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    by_name = {entry["name"]: entry for entry in listing["plugins"]}
    expected = {
        "nft-vlm-judge": ("0.1.0", "register_rewards", {"rewards": ["vlm-judge"]}),
        "nft-solver-midpoint": ("0.1.0", "register_solvers", {"solvers": ["midpoint"]}),
        "nft-colorfulness": ("0.1.0", "register_rewards", {"rewards": ["colorfulness"]}),
        "nft-tiny-euler": ("0.1.0", "register_solvers", {"solvers": ["tiny-euler"]}),
    }
    for name, (version, hook, registers) in expected.items():
        entry = by_name[name]
        assert (entry["distribution"], entry["version"]) == (name, version)
        assert entry["hooks"] == [hook] and entry["registers"] == registers
    assert "euler" in by_name["nft_solvers.plugin"]["registers"]["solvers"], "built-ins keep working"
    (error,) = listing["errors"]
    assert error["name"] == BROKEN and error["distribution"] == BROKEN
    assert error["error"] == "ImportError: nft-broken-example needs the library `missing_dependency`"

    result = nft(installed, "plugins", load="")
    listing = json.loads(result.stdout)
    assert not set(ALL) & {entry["name"] for entry in listing["plugins"]} and not listing["errors"], (
        "an empty NFT_LOAD_PLUGINS loads no installed plugin"
    )


def test_each_plugins_own_tests_pass_once_installed(installed):
    tests = [str(installed.sources[name] / "tests") for name in (*EXAMPLES, *GENERATED)]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(installed.site.parent),
        ]
        + tests,
        env=installed.env(None),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


class FixedJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that rates every image 4 out of 5."""

    requests = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests += 1
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Final Score: 4"}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FixedJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_nft_run_with_plugin_rewards_and_solver_despite_a_broken_plugin(
    installed, fast_config, judge_url, tmp_path
):
    config = tmp_path / "with-plugins.toml"
    config.write_text(
        fast_config.read_text()
        + '\n[[reward]]\nname = "vlm-judge"\nweight = 0.5\n'
        + f'[reward.options]\nbase_url = "{judge_url}"\nimage_size = 32\nretries = 0\ntimeout = 30\n'
        + '\n[[reward]]\nname = "colorfulness"\nweight = 0.1\nnormalize = "zscore"\n'
    )
    FixedJudge.requests = 0
    result = nft(
        installed,
        "run",
        str(config),
        "--set",
        "train.epochs=1",
        "--set",
        'solver.name="midpoint"',
        "--out",
        str(tmp_path / "runs"),
        load=",".join(ALL),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert (
        f"warning: plugin '{BROKEN}' (distribution {BROKEN}) failed to load: ImportError: "
        "nft-broken-example needs the library `missing_dependency`"
    ) in result.stderr
    run = tmp_path / "runs" / "tiny"
    assert (run / "summary.json").is_file()
    assert 'name = "midpoint"' in (run / "config.resolved.toml").read_text()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (train,) = [r for r in records if r["kind"] == "train"]
    assert train["reward/vlm-judge/raw_mean"] == pytest.approx(0.8)
    assert train["reward/colorfulness/raw_mean"] > 0 and train["reward/shapes-geneval/raw_mean"] is not None
    assert FixedJudge.requests >= 4


def test_standalone_scoring_sees_installed_rewards(installed, tmp_path):
    """`nft score`, `nft eval` and `nft_core.api.load_reward` see a plugin's reward as the trainer does."""
    import torch
    from PIL import Image

    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for i, image in enumerate(images):
        array = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(array).save(tmp_path / f"{i:05d}-0.png")
    (tmp_path / "prompts.txt").write_text("a\nb\n")
    out = tmp_path / "scores.jsonl"
    args = ["score", "colorfulness", "--images", str(tmp_path), "--prompts", str(tmp_path / "prompts.txt")]
    result = nft(installed, *args, "--out", str(out), "-o", "mean_weight=0.5", load="nft-colorfulness")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and {"score", "spread", "mean_chroma"} <= set(rows[0])
    result = nft(installed, "eval", "colorfulness", "--images", str(tmp_path), load="nft-colorfulness")
    assert result.returncode == 0 and "colorfulness: 2 images, score " in result.stdout, result.stderr
    code = (
        "import json; from nft_core.api import load_reward, available; "
        "r = load_reward('colorfulness', mean_weight=0.5); "
        "print(json.dumps([r.name, r.options.mean_weight, 'colorfulness' in available('rewards')]))"
    )
    env = installed.env("nft-colorfulness")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["colorfulness", 0.5, True]
    result = nft(installed, "score", "colorfulness", *args[2:], load="")
    assert result.returncode == 2 and "unknown reward 'colorfulness'" in result.stderr
