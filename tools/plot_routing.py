"""Plots the MoPPA routing statistics that a training run logged.

Reads the ``route_u{unit}_{prior}`` and ``route_entropy`` scalars from the run's MMEngine
``vis_data/scalars.json`` and writes one PNG: the mean alpha of every prior over training
(averaged over units), the per-token routing entropy, and the final mean alpha per unit.

Usage: python tools/plot_routing.py WORK_DIR [--out routing.png]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROUTE_KEY = re.compile(r'^route_u(\d+)_(\w+)$')


def find_scalars(work_dir: Path) -> Path:
    """The most recent ``vis_data/scalars.json`` under a work dir."""
    candidates = sorted(work_dir.glob('*/vis_data/scalars.json'), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f'no */vis_data/scalars.json under {work_dir}: is it the '
                                'work dir of a training run?')
    return candidates[-1]


def read_routing(scalars: Path) -> tuple[dict, list[int], list[float]]:
    """Routing series of the training records.

    Returns:
        ({unit: {prior: [(step, alpha), ...]}}, entropy steps, entropy values).
    """
    series: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    entropy_steps, entropies = [], []
    for line in scalars.read_text().splitlines():
        record = json.loads(line)
        step = record.get('iter', record.get('step'))
        for key, value in record.items():
            match = ROUTE_KEY.match(key)
            if match:
                series[int(match.group(1))][match.group(2)].append((step, value))
        if 'route_entropy' in record:
            entropy_steps.append(step)
            entropies.append(record['route_entropy'])
    if not series:
        raise ValueError(f'{scalars} holds no route_u*_* scalars: was the model a MoPPA detector?')
    return series, entropy_steps, entropies


def plot(series: dict, entropy_steps: list[int], entropies: list[float], out: Path) -> None:
    """Writes the three panels (alpha over training, entropy, final alpha per unit) to ``out``."""
    units = sorted(series)
    priors = list(series[units[0]])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for prior in priors:
        steps = [s for s, _ in series[units[0]][prior]]
        mean = np.mean([[v for _, v in series[u][prior]] for u in units], axis=0)
        axes[0].plot(steps, mean, label=prior)
    axes[0].axhline(1 / len(priors), color='grey', linestyle=':', label='uniform')
    axes[0].set(title='mean alpha over units', xlabel='iteration', ylabel='alpha')
    axes[0].legend()
    axes[1].plot(entropy_steps, entropies)
    axes[1].axhline(np.log(len(priors)), color='grey', linestyle=':', label='log P (uniform)')
    axes[1].set(title='per-token routing entropy', xlabel='iteration', ylabel='nats')
    axes[1].legend()
    final = np.array([[series[u][p][-1][1] for p in priors] for u in units])
    bottom = np.zeros(len(units))
    for index, prior in enumerate(priors):
        axes[2].bar([str(u) for u in units], final[:, index], bottom=bottom, label=prior)
        bottom += final[:, index]
    axes[2].set(title='final mean alpha per unit', xlabel='unit (block index)', ylabel='alpha')
    axes[2].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog='Example: python tools/plot_routing.py work_dirs/demo --out routing.png')
    parser.add_argument('work_dir', type=Path,
                        help='work dir of a MoPPA training run (it holds '
                        '<timestamp>/vis_data/scalars.json)')
    parser.add_argument('--out', type=Path, help='PNG path (default WORK_DIR/routing.png)')
    args = parser.parse_args(argv)
    try:
        scalars = find_scalars(args.work_dir)
        series, entropy_steps, entropies = read_routing(scalars)
    except (FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    out = args.out or args.work_dir / 'routing.png'
    plot(series, entropy_steps, entropies, out)
    print(f'routing plot of {len(series)} units from {scalars} -> {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
