"""Side by side with Flow-Factory's NFT trainer: whole epochs on the same tiny SD3 pipeline.

    python benchmarks/vs_flow_factory.py --peer /path/to/Flow-Factory            # 2 threads, then 1
    python benchmarks/vs_flow_factory.py --peer PATH --threads 2 --pairs 8 --out /tmp/vs.json

`--peer` is a checkout of the public repository X-GenGroup/Flow-Factory (any folder with its
`pyproject.toml` and `src/flow_factory`). Nothing of it is copied here: this script only builds its
environment, writes it a config and drives its own trainer.

**What it installs for the peer** (in a separate virtualenv, `--venv`, default `PEER/.venv-vs-nft`,
skipped when that venv already imports `flow_factory`; `--reinstall` forces it):

1. `pip install torch==2.14.1 torchvision==0.29.1` (`--torch`; ours is 2.14.1);
2. the peer's own `[project] dependencies` from its `pyproject.toml`, except torch / torchvision /
   torchaudio (torchaudio is only imported by its audio rewards and has no build for this torch
   here), with the packages that must match ours pinned to the versions this venv has: transformers,
   diffusers, peft, accelerate (and tokenizers, huggingface-hub, safetensors when the peer lists them);
3. `pip install --no-deps -e PEER` (its git submodule `diffusers/` is not used: the pinned diffusers is).

**The same work on both sides.** One tiny random `StableDiffusion3Pipeline` (`tests/_sd3_tiny.py`,
`save_tiny_sd3`) saved to a local folder that both load; fp32 (the peer's `trainer.autocast` is turned
off: it autocasts to bf16 even with `mixed_precision: "no"`, and latents are stored in fp32 instead of
its default fp16); the same prompts (`--prompts-per-epoch` of them: every epoch samples each prompt
`--images-per-prompt` times), `--steps` solver steps without CFG, `--trained-times` training times per
sample, `--batch-size` for sampling and update (the peer has one knob for both), one optimizer step per
epoch, LoRA rank `--rank` (alpha 2 x rank) on the same modules (ours' default list, given to the
peer), no KL term, JPEG compressibility as the reward on both (quality 95, `-kB / 500`), T5 prompts of
256 tokens (the peer's SD3 adapter always uses the pipeline's default of 256; ours is set to match),
no evaluation, checkpoint or tracker inside the timed epochs, no dataloader workers for the peer.
Everything else is each trainer's default (ours: `dpm2` collection solver, old decay
`linear-0.001-0.5`, EMA 0.9, monitors and alarms on; the peer: its `examples/nft/lora/sd3_5` recipe,
ODE sampling, off-policy EMA old policy with the same 0.001 / 0.5 ramp).

**How it times.** Each trainer lives in its own worker process (ours in this venv, the peer's in its
venv), loads once and runs `--warmup` untimed epochs; then the two run whole epochs in turn, in pairs
(the order alternates from pair to pair), one process idle while the other works. Ours: `train_epoch`
and `after_epoch` of `nft_core.loop.trainer.Trainer` (what `nft run` does per epoch), the phases read
from `metrics.jsonl` (`seconds/sampling`, `seconds/reward`, `seconds/training`). The peer: its own
`DiffusionNFTTrainer.start()` for one epoch, its `sample` (sampling), `prepare_feedback` (reward and
advantages) and `optimize` + `ema_step` (training) timed.

**A shared machine.** Before each pair the driver waits (within `--minutes` per thread count) until
processes other than the two workers use at most `--max-foreign` of the machine's CPU over a second
(`/proc/stat` minus the workers' own ticks; default 10 % when the epochs use every core, else the free
cores' share less 10 %: 40 % for 1 thread on 2 cores), and it measures that share again over the pair:
a pair during which others took more is kept in `per_pair` but left out of the medians (on 2 cores, a
2-thread epoch runs 10-30x slower while another process holds a core: every small parallel op waits for
the descheduled thread). It stops at `--pairs` clean pairs, `--max-pairs` pairs or `--minutes`. Niceness
does not help where the kernel schedules sessions as groups (`sched_autogroup`): the workers' priority
then counts only against the other processes of their own session.

Reported per thread count: the median of the per-pair ratios ours / theirs (epoch wall time, epoch CPU
time, sampling, reward, training), their range and quartiles, and the median seconds of each side; with
the machine (lscpu model, `torch.backends.cpu.get_cpu_capability()`, bf16 units) and both commits. JSON
into `benchmarks/results/vs-flow-factory.json` (`--out`). `--precision shipped` compares the two as they
come instead (ours `train.precision = "auto"`, bf16 where the CPU has bf16 units; the peer's bf16
autocast). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "vs-flow-factory.json"
MARK = "@@vs-ff "
"""Prefix of the one line per command a worker answers on stdout (everything else there is log)."""
PHASES = ("sampling", "reward", "training")
MATCHED = ("transformers", "diffusers", "peft", "accelerate", "tokenizers", "huggingface-hub", "safetensors")
"""Packages pinned in the peer's venv to the versions of this one."""
SKIPPED = ("torch", "torchvision", "torchaudio")
PROMPTS = (
    "a red cube on a table",
    "two blue balls",
    "a green cat",
    "a yellow dog next to a box",
    "three purple cones",
    "a white house",
    "an orange car",
    "a black bird on a wire",
    "a pink flower",
    "a brown horse",
    "a grey robot",
    "a cyan kite",
)
T5_TOKENS = 256
"""The T5 length of the peer's SD3 prompt encoding (diffusers' `encode_prompt` default; not an option)."""
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
}


# ---- the peer's side (runs in the peer's venv: stdlib, torch and flow_factory only) -------------------
def _peer_reward_module():
    """JPEG compressibility as a Flow-Factory pointwise reward, registered as a module for its loader."""
    import io
    import types

    import torch
    from flow_factory.rewards.abc import PointwiseRewardModel, RewardModelOutput
    from PIL import Image

    class JpegCompressibility(PointwiseRewardModel):
        """`-kB / 500` of each image saved as JPEG at quality 95 (round(255 x) as uint8), as ours."""

        use_tensor_inputs = True

        def __call__(self, prompt, image=None, **kwargs):
            sizes = []
            for x in image:
                pixels = (x.float() * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
                sizes.append(buffer.tell() / 1000)
            return RewardModelOutput(rewards=-torch.tensor(sizes) / 500, extra_info={})

    module = types.ModuleType("vs_ff_reward")
    module.JpegCompressibility = JpegCompressibility
    sys.modules["vs_ff_reward"] = module


def peer_worker(config: Path, threads: int, fp32: bool) -> None:
    """Build the peer's trainer from `config`, then answer `epoch` with one timed epoch of its loop."""
    import functools

    import torch

    torch.set_num_threads(threads)
    _peer_reward_module()
    from flow_factory.hparams import Arguments
    from flow_factory.trainers import load_trainer

    trainer = load_trainer(Arguments.load_from_yaml(str(config)))
    if fp32:  # its autocast is bf16 whatever `mixed_precision` says
        trainer.autocast = functools.partial(torch.autocast, device_type="cpu", enabled=False)
    seconds: dict[str, float] = {}

    def timed(phase: str, function):
        def call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - started

        return call

    trainer.sample = timed("sampling", trainer.sample)
    trainer.prepare_feedback = timed("reward", trainer.prepare_feedback)
    trainer.optimize = timed("training", trainer.optimize)
    trainer.adapter.ema_step = timed("training", trainer.adapter.ema_step)
    trainable = sum(p.numel() for p in trainer.adapter.get_trainable_parameters())

    def epoch() -> dict[str, Any]:
        seconds.clear()
        trainer.training_args.max_epochs = trainer.epoch + 1
        started, cpu = time.perf_counter(), time.process_time()
        trainer.start()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        return {"epoch": wall, "epoch_cpu": cpu, **seconds}

    _serve(epoch, {"trainable_parameters": trainable, "threads": torch.get_num_threads()})


# ---- our side (runs in this venv) ---------------------------------------------------------------------
def ours_worker(config: Path, run_dir: Path) -> None:
    """Build our Trainer from `config`, then answer `epoch` with one epoch as `nft run` does it."""
    sys.path.insert(0, str(ROOT))
    import torch

    from nft_core.config import load_config
    from nft_core.loop.trainer import Trainer

    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(load_config(config), run_dir, echo=lambda *_: None)
    trainer.start()  # writes the config, evaluates the base model: before any timed epoch
    trainer.outputs.write_summary("running")
    metrics = run_dir / "metrics.jsonl"
    trainable = sum(p.numel() for _, p in trainer.policy.trainable_parameters())

    def epoch() -> dict[str, Any]:
        started, cpu = time.perf_counter(), time.process_time()
        record, samples, scored = trainer.train_epoch()
        trainer.after_epoch(record, samples, scored, last=False)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        trainer.state.epoch += 1
        records = [json.loads(line) for line in metrics.read_text().splitlines()]
        last = [r for r in records if r.get("kind") == "train"][-1]  # alarms may follow it
        return {"epoch": wall, "epoch_cpu": cpu, **{phase: last[f"seconds/{phase}"] for phase in PHASES}}

    _serve(epoch, {"trainable_parameters": trainable, "threads": torch.get_num_threads()})


def _serve(epoch, facts: dict[str, Any]) -> None:
    """Say ready (with `facts`), then one answer line per `epoch` command until `quit` or end of input."""
    print(MARK + json.dumps({"ready": True, **facts}), flush=True)
    for line in sys.stdin:
        if line.strip() != "epoch":
            break
        print(MARK + json.dumps(epoch()), flush=True)


# ---- the peer's environment -----------------------------------------------------------------------------
def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def peer_requirements(peer: Path) -> list[str]:
    """The peer's `[project] dependencies`, torch's family left out, the matched packages pinned to ours."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((peer / "pyproject.toml").read_text())["project"]
    requirements = []
    for requirement in project.get("dependencies", []):
        name = requirement.split(";")[0].strip()
        base = name
        for stop in "<>=!~[ ":
            base = base.split(stop)[0]
        base = base.lower().replace("_", "-")
        if base in SKIPPED:
            continue
        if base in MATCHED:
            requirements.append(f"{base}=={_version(base)}")
        else:
            requirements.append(name)
    for base in ("transformers", "diffusers", "peft", "accelerate"):  # whatever the peer lists
        if not any(r.startswith(f"{base}==") for r in requirements):
            requirements.append(f"{base}=={_version(base)}")
    return requirements


def build_peer_env(peer: Path, venv: Path, torch_spec: list[str], reinstall: bool, log: Path) -> dict:
    """Create `venv` and install the peer into it (see the module docstring); returns what was installed."""
    python = venv_python(venv)
    requirements = peer_requirements(peer)
    installed = {"venv": str(venv), "torch": torch_spec, "requirements": requirements, "peer": "-e (no deps)"}
    ready = (
        python.exists()
        and subprocess.run([str(python), "-c", "import flow_factory, torch"], capture_output=True).returncode
        == 0
    )
    if ready and not reinstall:
        installed["reused"] = True
        return installed
    with log.open("a") as out:

        def run(*command: str) -> None:
            print("  $", " ".join(command), flush=True)
            subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT)

        if not python.exists():
            run(sys.executable, "-m", "venv", str(venv))
        run(str(python), "-m", "pip", "install", *torch_spec)
        run(str(python), "-m", "pip", "install", *requirements)
        run(str(python), "-m", "pip", "install", "--no-deps", "-e", str(peer))
    return installed


# ---- the two configs ------------------------------------------------------------------------------------
def write_inputs(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """The tiny pipeline, the prompts, our TOML and the peer's YAML under `work`; returns the configs."""
    sys.path.insert(0, str(ROOT))
    from nft_policies.base.options import DEFAULT_TARGET_MODULES
    from tests._sd3_tiny import RESOLUTION, save_tiny_sd3

    model = work / "tiny-sd3"
    if not (model / "model_index.json").exists():
        save_tiny_sd3(model)
    data = work / "prompts"
    data.mkdir(parents=True, exist_ok=True)
    prompts = [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f", {i}") for i in range(args.ppe)]
    (data / "train.txt").write_text("\n".join(prompts) + "\n")
    (data / "eval.txt").write_text(prompts[0] + "\n")
    rank = args.rank

    ours = work / "ours.toml"
    ours.write_text(
        f"""name = "vs-flow-factory"
[policy]
name = "sd3"
model = "{model}"
resolution = {RESOLUTION}
max_sequence_length = {T5_TOKENS}
[policy.lora]
rank = {rank}
alpha = {2.0 * rank}
[solver]
steps = {args.steps}
[objective]
trained_times = {args.trained_times}
[data]
prompts = "{data / "train.txt"}"
prompts_per_epoch = {args.ppe}
images_per_prompt = {args.ipp}
[train]
epochs = 100000
precision = "PRECISION"
batch_size = {args.batch_size}
sample_batch_size = {args.batch_size}
optimizer_steps_per_epoch = 1
threads = THREADS
[eval]
prompts = "{data / "eval.txt"}"
[eval.solver]
name = "euler"
steps = 2
[log]
progress = false
[[reward]]
name = "jpeg-compressibility"
"""
    )
    modules = "".join(f"\n    - {name}" for name in DEFAULT_TARGET_MODULES)
    peer = work / "peer.yaml"
    peer.write_text(
        f"""# Flow-Factory's examples/nft/lora/sd3_5/default.yaml, on the tiny pipeline and this geometry
launcher: accelerate
num_processes: 1
mixed_precision: "no"
data:
  dataset_dir: {data}
  preprocessing_batch_size: 8
  dataloader_num_workers: 0
  force_reprocess: true
  cache_dir: {work / "peer-cache"}
  sampler_type: auto
model:
  finetune_type: lora
  lora_rank: {rank}
  lora_alpha: {2 * rank}
  target_modules:{modules}
  model_name_or_path: {model}
  model_type: sd3-5
  master_weight_dtype: fp32
log:
  run_name: vs-nft
  logging_backend: none
  save_dir: {work / "peer-saves"}
  save_freq: 0
  verbose: false
train:
  trainer_type: nft
  advantage_aggregation: sum
  nft_beta: 1.0
  off_policy: true
  ema_decay_schedule: piecewise_linear
  flat_steps: 0
  ramp_rate: 0.001
  ema_decay: 0.5
  ema_update_interval: 1
  ema_device: cpu
  num_train_timesteps: {args.trained_times}
  time_sampling_strategy: discrete
  time_shift: 3.0
  timestep_range: 0.5
  kl_type: v-based
  kl_beta: 0
  ref_param_device: cpu
  adv_clip_range: 5.0
  resolution: {RESOLUTION}
  num_inference_steps: {args.steps}
  guidance_scale: 1.0
  per_device_batch_size: {args.batch_size}
  group_size: {args.ipp}
  global_std: false
  unique_sample_num_per_epoch: {args.ppe}
  gradient_step_per_epoch: 1
  learning_rate: 1.0e-4
  adam_weight_decay: 1.0e-4
  max_grad_norm: 1.0
  latent_storage_dtype: {"fp32" if args.precision == "fp32" else "fp16"}
  seed: 42
scheduler:
  dynamics_type: ODE
eval:
  resolution: {RESOLUTION}
  eval_freq: 0
rewards:
  - name: jpeg
    reward_model: vs_ff_reward.JpegCompressibility
    weight: 1
    batch_size: {args.batch_size}
    device: cpu
    dtype: float32
"""
    )
    return ours, peer


# ---- the driver -----------------------------------------------------------------------------------------
class Worker:
    """One trainer in its own process; `epoch()` runs one and returns its seconds."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.name = name
        self.log = log.open("a")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.facts = self._answer()

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
            self.log.write(line)
        raise RuntimeError(f"the {self.name} worker stopped; see {self.log.name}")

    def epoch(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("epoch\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine since boot (`/proc/stat`); None where there is none."""
    try:
        values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    return sum(values) - values[3] - values[4], sum(values)


def _process_jiffies(pids: list[int]) -> int:
    """User + system CPU ticks of the processes `pids` (`/proc/PID/stat`)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total


class ForeignLoad:
    """The share of the machine's CPU that processes other than ours (the driver and the two workers)
    used over an interval: the other work on a shared machine, which slows a 2-thread epoch many times
    over (a descheduled thread stalls every parallel op) and makes its pair worthless."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = [os.getpid(), *pids]
        self.start = _machine_jiffies()
        self.own = _process_jiffies(self.pids)

    def share(self) -> float | None:
        end = _machine_jiffies()
        if self.start is None or end is None or end[1] <= self.start[1]:
            return None
        own = _process_jiffies(self.pids) - self.own
        return max(0.0, (end[0] - self.start[0] - own) / (end[1] - self.start[1]))


def wait_for_quiet(pids: list[int], limit: float, patience: float) -> float | None:
    """Wait (up to `patience` seconds) until other processes use at most `limit` of the machine over one
    second; returns the last share seen (above `limit`: the machine stayed busy)."""
    deadline = time.time() + patience
    while True:
        probe = ForeignLoad(pids)
        time.sleep(1.0)
        share = probe.share()
        if share is None or share <= limit or time.time() > deadline:
            return share


def foreign_limit(requested: float | None, threads: int) -> float:
    """The share of the CPU other processes may take during a pair: `requested`, or by default 10 % when
    the epochs use every core, and the cores left free less 10 % when they do not (a 1-thread epoch on 2
    cores is undisturbed while others keep to one core)."""
    if requested is not None:
        return requested
    cores = os.cpu_count() or threads
    return max(0.1, (cores - threads) / cores - 0.1)


def _env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OFFLINE, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def measure(threads: int, args, ours_config: Path, peer_config: Path, work: Path) -> dict[str, Any]:
    """`args.pairs` interleaved pairs of epochs at `threads` threads."""
    script = str(Path(__file__).resolve())
    config = work / f"ours-{threads}.toml"
    text = ours_config.read_text().replace("threads = THREADS", f"threads = {threads}")
    config.write_text(text.replace('"PRECISION"', '"fp32"' if args.precision == "fp32" else '"auto"'))
    run_dir = work / f"ours-run-{threads}-{int(time.time())}"
    env = _env(threads)
    print(f"[{threads} thread(s)] loading both trainers", flush=True)
    ours = Worker(
        "ours",
        [sys.executable, script, "--worker", "ours", "--config", str(config), "--run-dir", str(run_dir)],
        env,
        work / "ours.log",
        work,
    )
    peer_command = [str(venv_python(args.venv)), script, "--worker", "peer", "--config", str(peer_config)]
    peer_command += ["--threads", str(threads), "--precision", args.precision]
    peer = Worker("peer", peer_command, env, work / "peer.log", work)
    pids = [ours.process.pid, peer.process.pid]
    limit = foreign_limit(args.max_foreign, threads)
    pairs: list[dict[str, Any]] = []
    try:
        for _ in range(args.warmup):
            ours.epoch()
            peer.epoch()
        deadline = time.time() + 60 * args.minutes
        while sum(p["clean"] for p in pairs) < args.pairs and len(pairs) < args.max_pairs:
            if pairs and time.time() > deadline:
                print(f"[{threads} thread(s)] --minutes spent; stopping at {len(pairs)} pairs", flush=True)
                break
            before = wait_for_quiet(pids, limit, max(0.0, deadline - time.time()))
            if before is not None and before > limit:
                print(f"[{threads} thread(s)] the machine stayed busy; stopping at {len(pairs)} pairs")
                break
            order = (ours, peer) if len(pairs) % 2 == 0 else (peer, ours)
            load = ForeignLoad(pids)
            got = {worker.name: worker.epoch() for worker in order}
            foreign = load.share()
            pair = {"first": order[0].name, "ours": got["ours"], "peer": got["peer"]}
            pair["ratio"] = {
                key: got["ours"][key] / got["peer"][key]
                for key in ("epoch", "epoch_cpu", *PHASES)
                if got["peer"].get(key)
            }
            pair.update(foreign_share_before=before, foreign_share=foreign)
            pair["clean"] = foreign is None or foreign <= limit
            pairs.append(pair)
            print(
                f"[{threads} thread(s)] pair {len(pairs)}: ours {got['ours']['epoch']:.3f} s, "
                f"Flow-Factory {got['peer']['epoch']:.3f} s, ratio {pair['ratio']['epoch']:.3f}"
                + ("" if foreign is None else f", other processes {100 * foreign:.0f}% of the CPU")
                + ("" if pair["clean"] else " (left out)"),
                flush=True,
            )
    finally:
        ours.close()
        peer.close()
    clean = [p for p in pairs if p["clean"]]
    return {
        "threads": threads,
        "pairs": len(clean),
        "pairs_left_out": len(pairs) - len(clean),
        "max_foreign_share": limit,
        "trainable_parameters": {
            "ours": ours.facts["trainable_parameters"],
            "peer": peer.facts["trainable_parameters"],
        },
        "torch_threads": {"ours": ours.facts["threads"], "peer": peer.facts["threads"]},
        **_summary(clean),
        "all_pairs": _summary(pairs),
        "per_pair": pairs,
    }


def _summary(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of the per-pair ratios, their range and quartiles, and the median seconds of each side."""
    if not pairs:
        return {}
    keys = list(pairs[0]["ratio"])
    return {
        "median_ratio": _medians([p["ratio"] for p in pairs]),
        "ratio_range": {
            key: [min(p["ratio"][key] for p in pairs), max(p["ratio"][key] for p in pairs)] for key in keys
        },
        "ratio_quartiles": {
            key: statistics.quantiles([p["ratio"][key] for p in pairs], n=4) if len(pairs) > 1 else None
            for key in keys
        },
        "median_seconds": {
            "ours": _medians([p["ours"] for p in pairs]),
            "peer": _medians([p["peer"] for p in pairs]),
        },
    }


def _medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def machine() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from nft_core.outputs.machine import machine_facts

    facts = machine_facts()
    facts.pop("threads", None)
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = [
            line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")
        ]
        facts["lscpu_model"] = model[0] if model else None
    except OSError:
        facts["lscpu_model"] = None
    facts["cores"] = os.cpu_count()
    facts["load_average_at_start"] = os.getloadavg()
    return facts


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", type=Path, help="a checkout of X-GenGroup/Flow-Factory")
    parser.add_argument("--venv", type=Path, help="the peer's virtualenv (default PEER/.venv-vs-nft)")
    parser.add_argument("--reinstall", action="store_true", help="install into the peer's venv again")
    parser.add_argument("--torch", default="torch==2.14.1 torchvision==0.29.1", help="torch for the peer")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--threads", default="2,1", help="thread counts, in order (e.g. 2,1)")
    parser.add_argument("--pairs", type=int, default=10, help="clean timed pairs wanted per thread count")
    parser.add_argument("--max-pairs", type=int, default=40, help="stop after this many pairs in any case")
    parser.add_argument(
        "--max-foreign",
        type=float,
        help="a pair counts when other processes used at most this share of the machine's CPU during it "
        "(default: 0.1 when the threads fill the cores, else the free cores' share less 0.1)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=20.0,
        help="time for the pairs of one thread count, at most (waiting for a quiet machine included)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs of each first")
    parser.add_argument("--prompts-per-epoch", dest="ppe", type=int, default=4)
    parser.add_argument("--images-per-prompt", dest="ipp", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="collection solver steps")
    parser.add_argument("--trained-times", type=int, default=4, help="training times per sample")
    parser.add_argument("--batch-size", type=int, default=8, help="sampling and update micro-batch")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank (alpha = 2 x rank)")
    parser.add_argument(
        "--precision",
        choices=("fp32", "shipped"),
        default="fp32",
        help="fp32: both in fp32 (the peer's bf16 autocast off, its latents stored in fp32); shipped: ours "
        'with train.precision = "auto" (bf16 where the CPU has bf16 units), the peer as it comes (bf16 '
        "autocast, fp16 latent storage)",
    )
    parser.add_argument("--worker", choices=("ours", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None and args.peer is None:
        parser.error("--peer PATH (a checkout of X-GenGroup/Flow-Factory) is required")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker is not None:  # a worker ends with its input, whatever threads its trainer left running
        if args.worker == "peer":
            peer_worker(args.config, int(args.threads), args.precision == "fp32")
        else:
            ours_worker(args.config, args.run_dir)
        sys.stdout.flush()
        os._exit(0)
    peer = args.peer.resolve()
    if not (peer / "pyproject.toml").is_file() or not (peer / "src" / "flow_factory").is_dir():
        sys.exit(f"error: {peer} is not a Flow-Factory checkout (no pyproject.toml / src/flow_factory)")
    args.venv = (args.venv or peer / ".venv-vs-nft").resolve()
    work = (args.work or Path(tempfile.mkdtemp(prefix="vs-flow-factory-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}", flush=True)
    print(f"peer venv: {args.venv}", flush=True)
    installed = build_peer_env(peer, args.venv, args.torch.split(), args.reinstall, work / "install.log")
    ours_config, peer_config = write_inputs(work, args)
    commit = subprocess.run(
        ["git", "-C", str(peer), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    ours_commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True)
    result: dict[str, Any] = {
        "machine": machine(),
        "ours": {
            "root": str(ROOT),
            "commit": ours_commit.stdout.strip() or None,
            "uncommitted_changes": bool(dirty.stdout.strip()) if ours_commit.returncode == 0 else None,
        },
        "peer": {"path": str(peer), "commit": commit or None, "installed": installed},
        "geometry": {
            "prompts_per_epoch": args.ppe,
            "images_per_prompt": args.ipp,
            "solver_steps": args.steps,
            "trained_times": args.trained_times,
            "batch_size": args.batch_size,
            "optimizer_steps_per_epoch": 1,
            "lora_rank": args.rank,
            "lora_alpha": 2 * args.rank,
            "resolution": 32,
            "t5_tokens": T5_TOKENS,
            "precision": "fp32"
            if args.precision == "fp32"
            else "shipped (ours auto, the peer bf16 autocast)",
        },
        "warmup_epochs": args.warmup,
        "runs": [],
    }
    started = time.time()
    for threads in [int(t) for t in args.threads.split(",")]:
        result["runs"].append(measure(threads, args, ours_config, peer_config, work))
        run = result["runs"][-1]
        print(f"[{threads} thread(s)] median ratios ours/Flow-Factory: {run.get('median_ratio')}", flush=True)
    result["minutes"] = (time.time() - started) / 60
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
