"""nft-vlm-judge: a reward that asks an OpenAI-compatible vision chat model to rate each image 1-5.

UnifiedReward style (docs/rewards.md §10): each image goes as a base64 PNG with the caption and an
instruction to end with "Final Score: <1-5>"; the reward is that score / 5 (0 when no score is
found). Usable on its own::

    from nft_vlm_judge import VLMJudgeReward

    judge = VLMJudgeReward.from_options(base_url="http://localhost:8000/v1", model="my-vlm")
    judge(images, prompts).scores        # [N] in [0, 1]

or in a run config as `[[reward]] name = "vlm-judge"` once the package is installed.
"""

from nft_vlm_judge.client import ChatClient
from nft_vlm_judge.reward import DEFAULT_INSTRUCTION, VLMJudgeOptions, VLMJudgeReward, parse_final_score

__all__ = ["DEFAULT_INSTRUCTION", "ChatClient", "VLMJudgeOptions", "VLMJudgeReward", "parse_final_score"]
