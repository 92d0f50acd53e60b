"""Figure 2 of the MoPPA paper: fitting a high-frequency target with LoRA and with MoPPA.

Tokens X (B, H*W, D) are Gaussian; the target is Y = X + T(X), where T is a random spatially
high-frequency operator (see :func:`make_target`). Both adapters start as the identity (the
"pre-trained" map) and are fitted with Adam, full batch, for a fixed number of steps:
- LoRA: ``LoRALinear`` on a frozen identity ``Linear(D, D)``, i.e. Y_hat = X + X A^T B^T, a
  low-rank linear map of each token (2 * D * rank trainable parameters);
- MoPPA: one ``MoPPAUnit`` (default config, bottleneck r) on the token grid.
Budgets: MoPPA's bottlenecks set the budgets; LoRA's rank is the one whose count is closest
(within D, half a rank's worth, until LoRA reaches full rank D). For every method, budget and
seed the learning rate is picked from ``--lrs`` by the final training error (the same search
for both methods). Error = relative MSE ||Y_hat - Y||^2 / ||T(X)||^2: 1 at step 0, 0 is a
perfect fit; reported on the training tokens (the fit) and on held-out tokens.

Writes ``results.csv`` and ``adaptation_analysis.png`` (left: error vs trainable parameters;
right: channel-averaged absolute error maps of a training sample at one budget) to --out-dir.

Example:
    PYTHONPATH=. python tools/analysis/adaptation_analysis.py --threads 1
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from moppa_det.models.baselines import LoRALinear
from moppa_det.models.moppa import MoPPAConfig, MoPPAUnit
from moppa_det.ops import dct2, idct2

CSV_COLUMNS = ('method', 'size', 'params', 'seed', 'lr', 'train_rel_mse', 'test_rel_mse')


@dataclass
class SpectralTarget:
    """T(X) = scale * sum_j IDCT2(G_j * DCT2(X m_j)) p_j^T: K filtered channel components.

    Attributes:
        mix_in: (D, K) orthonormal columns m_j, the channel directions that are filtered.
        gains: (K, H, W) DCT-domain gains G_j, each of unit RMS.
        mix_out: (K, D) output directions p_j.
        scale: Makes E||T(X)||^2 = E||X||^2 for Gaussian X.
    """
    mix_in: torch.Tensor
    gains: torch.Tensor
    mix_out: torch.Tensor
    scale: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Applies T to tokens x of shape (B, H*W, D); returns (B, H*W, D)."""
        b, n, _ = x.shape
        k, h, w = self.gains.shape
        z = (x @ self.mix_in).transpose(1, 2).reshape(b, k, h, w)
        filtered = idct2(dct2(z) * self.gains).reshape(b, k, n).transpose(1, 2)
        return self.scale * filtered @ self.mix_out


def radial_frequency(h: int, w: int) -> torch.Tensor:
    """rho = sqrt((n/H)^2 + (m/W)^2) / sqrt(2) in [0, 1) for DCT index (n, m). Returns (H, W)."""
    rho_h = torch.arange(h, dtype=torch.float64) / h
    rho_w = torch.arange(w, dtype=torch.float64) / w
    return (rho_h[:, None] ** 2 + rho_w[None, :] ** 2).sqrt() / math.sqrt(2.0)


def make_target(dim: int, grid: tuple[int, int], components: int = 16,
                band: tuple[float, float] = (0.3, 0.95), isotropy: float = 1.0,
                generator: torch.Generator | None = None) -> SpectralTarget:
    """Draws a random high-frequency, high-rank target operator.

    Each component j filters the channel projection X m_j with its own random gain G_j whose
    energy lies in the band rho in ``band`` (mid/high frequencies), so T(X) is spatially
    high-frequency; K = ``components`` independent components with orthonormal m_j make T
    rank K in channel space. A per-token map (as LoRA's) can only capture what each filter
    does to a token itself (its centre tap, the mean of G_j), not the spatial mixing. G_j is
    ``sqrt(isotropy) * R_j(rho) + sqrt(1 - isotropy) * E_j`` (both parts, and G_j, unit RMS):
    - R_j: an isotropic random band-pass profile, sum_q a_jq exp(-(rho - c_q)^2 / (2 s^2)),
      a_jq ~ N(0, 1), six bumps c_q evenly spaced over the band: a generic rotation- and
      translation-invariant operator, like the physics MoPPA assumes, but of none of its
      priors' shapes;
    - E_j: i.i.d. N(0, 1) DCT coefficients under the band envelope: anisotropic, unstructured.

    Args:
        dim: Token width D.
        grid: (H, W) of the token grid.
        components: K <= D.
        band: (low, high) of the band in rho.
        isotropy: Fraction in [0, 1] of each gain's energy in the isotropic part.
        generator: Source of randomness.

    Returns:
        The target operator.
    """
    h, w = grid
    rho = radial_frequency(h, w)
    centers = torch.linspace(band[0], band[1], 6, dtype=torch.float64)
    width = (band[1] - band[0]) / 10
    bumps = torch.exp(-(rho[None] - centers[:, None, None]) ** 2 / (2 * width ** 2))  # (6, H, W)
    coeffs = torch.randn(components, 6, generator=generator, dtype=torch.float64)
    radial = torch.einsum('kq,qhw->khw', coeffs, bumps)
    envelope = bumps.sum(0).clamp_max(1.0)
    noise = envelope * torch.randn(components, h, w, generator=generator, dtype=torch.float64)

    def unit_rms(g: torch.Tensor) -> torch.Tensor:
        return g / g.square().mean(dim=(1, 2), keepdim=True).sqrt()

    gains = unit_rms(math.sqrt(isotropy) * unit_rms(radial)
                     + math.sqrt(1 - isotropy) * unit_rms(noise))
    mix_in = torch.linalg.qr(torch.randn(dim, components, generator=generator,
                                         dtype=torch.float64))[0]
    mix_out = torch.randn(components, dim, generator=generator, dtype=torch.float64)
    # For white X, E||T(X)||^2 / E||X||^2 = mean(G_j^2 |p_j|^2) / D summed over j.
    energy = (gains.square().mean(dim=(1, 2)) * mix_out.square().sum(1)).sum() / dim
    return SpectralTarget(mix_in.float(), gains.float(), mix_out.float(),
                          float(energy.rsqrt()))


def build_model(method: str, size: int, dim: int) -> nn.Module:
    """LoRA of rank ``size`` on a frozen identity map, or a MoPPA unit of bottleneck ``size``."""
    if method == 'moppa':
        return MoPPAUnit(dim, MoPPAConfig(bottleneck=size))
    identity = nn.Linear(dim, dim, bias=False)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(dim))
    return LoRALinear(identity, rank=size, alpha=float(size))  # scaling 1; lr is searched


def predict(model: nn.Module, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    return model(x, grid=grid) if isinstance(model, MoPPAUnit) else model(x)


def relative_mse(pred: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """||pred - y||^2 / ||y - x||^2: the unexplained fraction of the target residual."""
    return float((pred - y).square().sum() / (y - x).square().sum())


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, grid: tuple[int, int], steps: int,
        lr: float) -> nn.Module:
    """Full-batch Adam on the MSE with a cosine learning-rate decay (a clean final value)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        (predict(model, x, grid) - y).square().mean().backward()
        optimizer.step()
        schedule.step()
    return model


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_lora_rank(params: int, dim: int) -> int:
    """The LoRA rank (on a D x D map: 2 * D per rank) closest to ``params``, capped at D."""
    return min(dim, max(1, round(params / (2 * dim))))


def run_case(method: str, size: int, seed: int, data: dict, grid: tuple[int, int],
             steps: int, lrs: tuple[float, ...]) -> tuple[dict, nn.Module]:
    """Fits one (method, size, seed) at every lr; keeps the best by training error.

    Returns:
        The CSV row and the kept model.
    """
    best = None
    for lr in lrs:
        torch.manual_seed(seed)  # the same initialisation for every lr
        model = fit(build_model(method, size, data['x'].shape[-1]), data['x'], data['y'], grid,
                    steps, lr)
        with torch.no_grad():
            train = relative_mse(predict(model, data['x'], grid), data['x'], data['y'])
            test = relative_mse(predict(model, data['x_test'], grid), data['x_test'],
                                data['y_test'])
        if best is None or train < best[0]['train_rel_mse']:
            best = ({'method': method, 'size': size, 'params': count_trainable(model),
                     'seed': seed, 'lr': lr, 'train_rel_mse': train, 'test_rel_mse': test},
                    model)
    return best


@torch.no_grad()
def error_maps(models: dict[str, tuple[dict, nn.Module]], data: dict,
               grid: tuple[int, int]) -> dict[str, tuple[str, torch.Tensor]]:
    """Channel-averaged |T| and |Y_hat - Y| of the first training sample (the fit).

    Args:
        models: 'lora' and 'moppa' -> (CSV row, fitted model).
        data: The tokens of :func:`make_data`.
        grid: (H, W).

    Returns:
        'target', 'lora', 'moppa' -> (panel title, (H, W) map).
    """
    x, y = data['x'][:1], data['y'][:1]
    maps = {'target': ('|T| (target residual)', (y - x).abs().mean(-1).reshape(grid))}
    for method, (row, model) in models.items():
        pred = predict(model, x, grid)
        name = 'LoRA' if method == 'lora' else 'MoPPA'
        title = (f"|error| {name} r={row['size']}, {row['params']} params\n"
                 f'rel. MSE {relative_mse(pred, x, y):.2f}')
        maps[method] = (title, (pred - y).abs().mean(-1).reshape(grid))
    return maps


def make_data(dim: int, grid: tuple[int, int], samples: int, components: int, isotropy: float,
              seed: int) -> dict:
    """A target and Gaussian train / held-out tokens for one seed."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    target = make_target(dim, grid, components, isotropy=isotropy, generator=generator)
    n = grid[0] * grid[1]
    x, x_test = torch.randn(2, samples, n, dim, generator=generator)
    return {'x': x, 'y': x + target(x), 'x_test': x_test, 'y_test': x_test + target(x_test)}


def run_analysis(dim: int = 64, grid: tuple[int, int] = (16, 16),
                 bottlenecks: tuple[int, ...] = (2, 4, 8, 16, 32), samples: int = 8,
                 components: int = 16, isotropy: float = 1.0, steps: int = 600,
                 lrs: tuple[float, ...] = (3e-2, 1e-1, 3e-1), seeds: tuple[int, ...] = (0, 1, 2),
                 map_bottleneck: int = 8) -> tuple[list[dict], dict]:
    """Fits LoRA and MoPPA at matched budgets.

    Args:
        dim: Token width D.
        grid: (H, W) token grid.
        bottlenecks: MoPPA bottlenecks; each sets one budget.
        samples: Training samples (and as many held-out ones).
        components: Target components K (its channel rank).
        isotropy: See :func:`make_target`.
        steps: Adam steps per fit.
        lrs: Learning rates searched per fit.
        seeds: Seeds; each draws its own target, data and initialisation.
        map_bottleneck: Budget (a MoPPA bottleneck) of the error maps, shown for seed 0.

    Returns:
        CSV rows (``CSV_COLUMNS``) and the :func:`error_maps` of seed 0 at ``map_bottleneck``
        (empty if that budget is not run).
    """
    rows, maps = [], {}
    for seed in seeds:
        data = make_data(dim, grid, samples, components, isotropy, seed)
        for bottleneck in bottlenecks:
            moppa = run_case('moppa', bottleneck, seed, data, grid, steps, lrs)
            rank = matched_lora_rank(moppa[0]['params'], dim)
            lora = run_case('lora', rank, seed, data, grid, steps, lrs)
            rows += [lora[0], moppa[0]]
            if seed == seeds[0] and bottleneck == map_bottleneck:
                maps = error_maps({'lora': lora, 'moppa': moppa}, data, grid)
    return rows, maps


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds per (method, size)."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row['method'], row['size']), []).append(row)
    summary = []
    for (method, size), group in groups.items():
        item = {'method': method, 'size': size, 'params': group[0]['params']}
        for key in ('train_rel_mse', 'test_rel_mse'):
            values = [g[key] for g in group]
            item[key] = statistics.mean(values)
            item[key + '_std'] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(item)
    return summary


def format_summary(summary: list[dict]) -> str:
    """One line per budget: LoRA and MoPPA side by side (mean +- std over seeds)."""
    lora = [s for s in summary if s['method'] == 'lora']
    moppa = [s for s in summary if s['method'] == 'moppa']
    header = (f"{'MoPPA r':>7} {'params':>6} | {'LoRA r':>6} {'params':>6} | "
              f"{'LoRA train':>15} {'MoPPA train':>15} | {'LoRA test':>15} {'MoPPA test':>15}")
    lines = [header, '-' * len(header)]
    for lo, mo in zip(lora, moppa):
        cell = [f"{s[k]:.3f} +- {s[k + '_std']:.3f}"
                for k in ('train_rel_mse', 'test_rel_mse') for s in (lo, mo)]
        lines.append(f"{mo['size']:>7} {mo['params']:>6} | {lo['size']:>6} {lo['params']:>6} | "
                     f"{cell[0]:>15} {cell[1]:>15} | {cell[2]:>15} {cell[3]:>15}")
    return '\n'.join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, 'w', newline='') as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def plot(summary: list[dict], maps: dict, path: Path, title: str) -> None:
    """Left: relative MSE vs trainable parameters; right: |T| and |error| maps at one budget."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig = plt.figure(figsize=(14, 4.4))
    grid = fig.add_gridspec(1, 4, width_ratios=(1.6, 1, 1, 1))
    ax = fig.add_subplot(grid[0])
    for method, label, color in (('lora', 'LoRA', 'tab:blue'), ('moppa', 'MoPPA', 'tab:orange')):
        points = [s for s in summary if s['method'] == method]
        params = [s['params'] for s in points]
        ax.errorbar(params, [s['train_rel_mse'] for s in points], color=color, marker='o',
                    yerr=[s['train_rel_mse_std'] for s in points], label=f'{label} (fit)',
                    capsize=3)
        ax.plot(params, [s['test_rel_mse'] for s in points], color=color, linestyle='--',
                marker='.', label=f'{label} (held-out)')
    ax.set_xscale('log')
    # Label the budgets themselves: a short log axis has one decade label at most.
    budgets = sorted({s['params'] for s in summary if s['method'] == 'moppa'})
    ax.set_xticks(budgets, [str(b) for b in budgets], fontsize=8)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0, 1.05)
    ax.set_xlabel('trainable parameters')
    ax.set_ylabel('relative MSE  ||Y_hat - Y||^2 / ||T||^2')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    vmax = float(maps['target'][1].max())
    for i, key in enumerate(('target', 'lora', 'moppa')):
        label, values = maps[key]
        panel = fig.add_subplot(grid[i + 1])
        image = panel.imshow(values.numpy(), cmap='magma', vmin=0, vmax=vmax)
        panel.set_title(label, fontsize=8)
        panel.set_xticks([])
        panel.set_yticks([])
    fig.colorbar(image, ax=fig.axes[1:], shrink=0.7, label='channel-mean |.|, training sample 0')
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out-dir', type=Path, default=Path('work_dirs/adaptation_analysis'))
    parser.add_argument('--dim', type=int, default=64)
    parser.add_argument('--grid', type=int, default=16, help='side of the square token grid')
    parser.add_argument('--bottlenecks', type=int, nargs='+', default=[2, 4, 8, 16, 32])
    parser.add_argument('--samples', type=int, default=8)
    parser.add_argument('--components', type=int, default=16)
    parser.add_argument('--isotropy', type=float, default=1.0)
    parser.add_argument('--steps', type=int, default=600)
    parser.add_argument('--lrs', type=float, nargs='+', default=[3e-2, 1e-1, 3e-1])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--map-bottleneck', type=int, default=8)
    parser.add_argument('--threads', type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows, maps = run_analysis(args.dim, (args.grid, args.grid), tuple(args.bottlenecks),
                              args.samples, args.components, args.isotropy, args.steps,
                              tuple(args.lrs), tuple(args.seeds), args.map_bottleneck)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out_dir / 'results.csv')
    summary = summarize(rows)
    title = (f'D={args.dim}, {args.grid}x{args.grid} tokens, K={args.components}, '
             f'isotropy={args.isotropy}, {args.steps} Adam steps, {len(args.seeds)} seeds')
    if maps:
        plot(summary, maps, args.out_dir / 'adaptation_analysis.png', title)
    print(title)
    print('relative MSE ||Y_hat - Y||^2 / ||T||^2, mean +- std over seeds\n')
    print(format_summary(summary))
    print(f'\nwrote {args.out_dir / "results.csv"} and {args.out_dir / "adaptation_analysis.png"}')


if __name__ == '__main__':
    main()
