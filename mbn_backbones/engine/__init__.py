"""Runner, hooks and checkpoint files: resumable random states, finite-loss checks,
checkpoints that survive a kill and never run code."""
from .checkpoint import (CheckpointError, CheckpointHashError, CheckpointMismatchError,
                         atomic_save, atomic_write_text, check_state_dict_matches,
                         checkpoint_safe_globals, download_checkpoint, existing_checkpoints,
                         load_local_checkpoint, mmengine_checkpoint_globals, model_zoo_url,
                         published_hash_prefix, read_checkpoint, resolve_last_checkpoint)
from .hooks import FiniteLossHook, ProgressBarHook, RNGStateHook, get_rng_state, set_rng_state
from .runner import CheckpointHook, Runner

__all__ = [
    'CheckpointError', 'CheckpointHashError', 'CheckpointHook', 'CheckpointMismatchError',
    'FiniteLossHook', 'ProgressBarHook', 'RNGStateHook', 'Runner', 'atomic_save',
    'atomic_write_text', 'check_state_dict_matches', 'checkpoint_safe_globals',
    'download_checkpoint', 'existing_checkpoints', 'get_rng_state', 'load_local_checkpoint',
    'mmengine_checkpoint_globals', 'model_zoo_url', 'published_hash_prefix', 'read_checkpoint',
    'resolve_last_checkpoint', 'set_rng_state',
]
from .class_count import ClassCountHook, ClassCountMismatch, class_count_mismatches  # noqa: E402
from .config_check import ConfigError, check_config, unknown_arguments  # noqa: E402

__all__ += ['ClassCountHook', 'ClassCountMismatch', 'class_count_mismatches',
            'ConfigError', 'check_config', 'unknown_arguments']
