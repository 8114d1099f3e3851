"""Training reliability: resumable random states, finite-loss checks, safe checkpoints."""
from .checkpoint import (CheckpointError, CheckpointMismatchError, atomic_save, atomic_write_text,
                         check_state_dict_matches, existing_checkpoints, load_local_checkpoint,
                         resolve_last_checkpoint)
from .hooks import FiniteLossHook, ProgressBarHook, RNGStateHook, get_rng_state, set_rng_state

__all__ = [
    'CheckpointError', 'CheckpointMismatchError', 'FiniteLossHook', 'ProgressBarHook', 'RNGStateHook',
    'atomic_save',
    'atomic_write_text', 'check_state_dict_matches', 'existing_checkpoints', 'get_rng_state',
    'load_local_checkpoint', 'resolve_last_checkpoint', 'set_rng_state',
]
from .class_count import ClassCountHook, ClassCountMismatch, class_count_mismatches  # noqa: E402
from .config_check import ConfigError, check_config, unknown_arguments  # noqa: E402

__all__ += ['ClassCountHook', 'ClassCountMismatch', 'class_count_mismatches',
            'ConfigError', 'check_config', 'unknown_arguments']
