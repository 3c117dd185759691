"""The run configuration: TOML validated with pydantic (`schema.py`: the tables; `loading.py`: reading,
`--set` overrides, validation of the tables and of every plugin's options, the resolved config)."""

from nft_core.config.loading import (
    apply_override,
    load_config,
    load_raw,
    parse_override,
    resolved_config,
    validate,
)
from nft_core.config.schema import (
    AlarmConfig,
    DataConfig,
    EvalConfig,
    LogConfig,
    ObjectiveConfig,
    PolicyConfig,
    RewardConfig,
    RunConfig,
    SolverConfig,
    TrainConfig,
)

__all__ = [
    "AlarmConfig",
    "DataConfig",
    "EvalConfig",
    "LogConfig",
    "ObjectiveConfig",
    "PolicyConfig",
    "RewardConfig",
    "RunConfig",
    "SolverConfig",
    "TrainConfig",
    "apply_override",
    "load_config",
    "load_raw",
    "parse_override",
    "resolved_config",
    "validate",
]
