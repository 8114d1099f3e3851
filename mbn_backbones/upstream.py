"""Which upstream release each of our fixes was written against.

A component that works around an upstream defect (or leans on an upstream
private method) calls :func:`check_version` when it is built. On the release
it was written for it stays silent; on another one it warns once per process,
in one line, naming what to verify, so that a fix that upstream has made
unnecessary (or a private method that moved) is noticed rather than trusted.
"""
import warnings
from importlib.metadata import PackageNotFoundError, version

_warned = set()


class UpstreamVersionWarning(UserWarning):
    """An mbn_backbones component meets an upstream release it was not written for."""


def check_version(package: str, written_for: str, component: str, verify: str) -> bool:
    """Warn once if ``package`` is not at ``written_for``; True when it is.

    Args:
        package: distribution name, e.g. ``'mmengine'``.
        written_for: the release the component was written and tested against.
        component: what calls, e.g. ``'mbn_backbones.Runner'``.
        verify: what to check on another release (one sentence).
    """
    try:
        found = version(package)
    except PackageNotFoundError:
        found = None
    if found == written_for:
        return True
    if (package, component) not in _warned:
        _warned.add((package, component))
        warnings.warn(f'{component} was written for {package} {written_for}, found {found}: '
                      f'verify {verify}', UpstreamVersionWarning, stacklevel=3)
    return False
