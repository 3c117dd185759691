"""Shared fixtures: a tiny random shapes-tiny checkpoint, a fast run config, a toy reward."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests._toy_reward import brightness_reward  # noqa: F401 (a fixture for the policy tests)

# Tiny models are much faster on one thread than on two oversubscribed ones (measured: ~100x on small layers).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
# The public prompt sets live beside the checkout (../shared/data); NFT_TEST_DATA points elsewhere.
# Tests that read them skip with a reason when they are absent.
SHARED_DATA = Path(os.environ.get("NFT_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised shapes-tiny network with small channels, saved like the shipped one."""
    from nft_shapes.model import TinyUNet, TinyUNetConfig
    from nft_shapes.policy import MAX_TOKENS, TOKENS, save_network

    torch.manual_seed(0)
    model = TinyUNet(
        TinyUNetConfig(
            vocab_size=len(TOKENS), max_tokens=MAX_TOKENS, channels=(8, 16, 16), text_dim=16, time_dim=16
        )
    )
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_network(model, path)
    return path


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory):
    """Tiny random diffusers pipelines saved once per session: `tiny_pipelines(name, save)` returns the
    folder `save(folder)` wrote for `name` (tests/test_families.py and the families' own test files)."""
    root = tmp_path_factory.mktemp("families")
    built: dict[str, Path] = {}

    def folder(name: str, save) -> Path:
        if name not in built:
            built[name] = save(root / name)
        return built[name]

    return folder


FAST_CONFIG = """
name = "tiny"
[policy]
name = "shapes-tiny"
checkpoint = "{checkpoint}"
[solver]
name = "euler"
steps = 3
[data]
prompts = "shapes:train"
prompts_per_epoch = 2
images_per_prompt = 2
[train]
epochs = 2
batch_size = 4
optimizer_steps_per_epoch = 2
precision = "fp32"  # the same numbers on every test machine (auto depends on the CPU)
[eval]
prompts = "shapes:eval-1"
baseline_guidance = [2.0]
every = 1
[eval.solver]
name = "euler"
steps = 2
[log]
grid_every = 1
checkpoint_every = 1
progress = false
[[reward]]
name = "shapes-geneval"
normalize = "group-zscore"
"""


@pytest.fixture
def fast_config(tmp_path, tiny_checkpoint) -> Path:
    """A TOML config that runs two epochs of the whole loop in a few seconds."""
    path = tmp_path / "fast.toml"
    path.write_text(FAST_CONFIG.format(checkpoint=tiny_checkpoint))
    return path
