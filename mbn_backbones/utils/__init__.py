from .complexity import count_madds, count_params
from .quiet import quiet_upstream_noise

__all__ = ['count_madds', 'count_params', 'quiet_upstream_noise']
