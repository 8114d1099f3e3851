"""What the two demos share."""
from __future__ import annotations

from pathlib import Path


def ensure_dataset(make, data_root: Path, quiet: bool = False) -> None:
    """Generate a synthetic dataset with ``make`` (one of
    ``mbn_backbones.datasets.make_synthetic_*``) in ``data_root`` unless it is there."""
    from tqdm import tqdm

    progress = (lambda it, **kw: it) if quiet else tqdm
    made = make(data_root, progress=progress)
    if not quiet:
        counts = ', '.join(f'{split} {n} images' for split, n in made.num_images.items())
        print(f'dataset {made.root} ({"already there" if made.reused else "generated"}): {counts}')

