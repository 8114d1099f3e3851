from .complexity import count_madds, count_params

__all__ = ['count_madds', 'count_params']
