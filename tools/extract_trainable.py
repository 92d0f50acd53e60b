"""Converts a full moppa_det checkpoint into one that holds only what was trained.

The frozen backbone weights are dropped; the units, neck, heads, optimizer, schedulers, meta and
the backbone's identity (model name, sha256 of its weights) stay, so ``tools/test.py`` and
``--resume`` accept the result with the same config.

Usage: python tools/extract_trainable.py FULL.pth OUT.pth [--overwrite]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from moppa_det.engine.safe_checkpoint import load_from_local_safe  # noqa: E402
from moppa_det.engine.trainable_state import strip_frozen_weights  # noqa: E402


def extract(source: Path, target: Path, overwrite: bool = False) -> tuple[int, int]:
    """Writes the trainable-only checkpoint atomically.

    Returns:
        (entries dropped, bytes written).

    Raises:
        FileNotFoundError, FileExistsError, ValueError: naming the file at fault.
    """
    if not source.is_file():
        raise FileNotFoundError(f'checkpoint {source} does not exist')
    if target.exists() and not overwrite:
        raise FileExistsError(f'{target} exists; pass --overwrite to replace it')
    checkpoint = load_from_local_safe(str(source), map_location='cpu')
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise ValueError(f'{source} is not an MMEngine checkpoint (no state_dict)')
    dropped = strip_frozen_weights(checkpoint)
    if dropped == 0:
        raise ValueError(f'{source} holds no frozen MoPPA backbone weights (already '
                         'trainable-only, or not a moppa_det checkpoint)')
    checkpoint.setdefault('meta', {})['moppa_frozen_weights_dropped'] = dropped
    partial = target.with_name(f'.{target.name}.partial')
    torch.save(checkpoint, partial)
    os.replace(partial, target)  # never leaves a half-written target behind
    return dropped, target.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', type=Path)
    parser.add_argument('out', type=Path)
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args(argv)
    try:
        dropped, size = extract(args.checkpoint, args.out, args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    source_size = args.checkpoint.stat().st_size
    print(f'{args.out}: dropped {dropped} frozen entries; {size / 2**20:.1f} MiB '
          f'(full checkpoint {source_size / 2**20:.1f} MiB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
