"""The `nft` plugin of nft-vlm-judge: registers the `vlm-judge` reward with its options model."""

from nft_core.hookspecs import hookimpl


@hookimpl
def register_rewards(register):
    """Register `vlm-judge`; its `[reward.options]` table is validated by `VLMJudgeOptions`."""
    from nft_vlm_judge.reward import VLMJudgeOptions, VLMJudgeReward

    register(
        "vlm-judge",
        VLMJudgeReward.from_options,
        options=VLMJudgeOptions,
        description="a vision chat model's 1-5 rating of image vs prompt, / 5 (UnifiedReward style)",
    )
