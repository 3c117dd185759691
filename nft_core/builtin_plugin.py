"""Built-in objectives and prompt sources, registered through the same hooks as any plugin."""

from nft_core.flowgrpo import FlowGRPOObjective, FlowGRPOOptions
from nft_core.hookspecs import hookimpl
from nft_core.loop.conditions import edit_prompts
from nft_core.loop.frames import FramesOptions, FramesReward
from nft_core.loop.levers import CompileLever, CompileOptions, SdpaLever, SdpaOptions
from nft_core.loop.prompts import read_prompt_file
from nft_core.objective import NFTObjective, NFTOptions, RFTObjective, RFTOptions
from nft_core.outputs.monitors import PixelDiversity, PixelDiversityOptions


@hookimpl
def register_objectives(register):
    register("nft", NFTObjective, options=NFTOptions)
    register("rft", RFTObjective, options=RFTOptions)
    register("flowgrpo", FlowGRPOObjective, options=FlowGRPOOptions)


@hookimpl
def register_rewards(register):
    register(
        "frames",
        FramesReward,
        options=FramesOptions,
        description="a video's frames scored with an image reward: mean or min over frames, minus flicker",
    )


@hookimpl
def register_monitors(register):
    register(
        "pixel-diversity",
        PixelDiversity,
        options=PixelDiversityOptions,
        description="mean pairwise pixel distance inside each prompt's group of samples",
    )


@hookimpl
def register_levers(register):
    register(
        "compile", CompileLever, options=CompileOptions, description="torch.compile of the rollout networks"
    )
    register("sdpa", SdpaLever, options=SdpaOptions, description="the attention kernels rollouts may use")


@hookimpl
def register_prompt_sources(register):
    register("file", read_prompt_file, description="a .txt file (one prompt per line) or GenEval .jsonl")
    register(
        "edit",
        edit_prompts,
        description='editing prompts with source images: edit:FILE.jsonl ({"prompt", "image"} lines) or '
        "edit:FOLDER (images + prompts.txt)",
    )
