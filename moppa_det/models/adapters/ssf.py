"""SSF: a per-channel scale and shift (y = x * gamma + beta) after chosen modules, via hooks.

Sites, as in the MoPPA authors' ViT code: after the patch embedding (before the position
embedding and prefix tokens are added), after norm2 of each adapted block and after the final
norm (when the host applies one; Swin's stage outputs have none). Their Swin code puts one after
norm1 of each block too (option ``norm1``) and none after the patch embedding.

A patch-embedding site makes every block's backward pass run (its gradient flows through all
of them); ``patch_embed=False`` keeps the backward pass to the adapted blocks, for comparisons
of methods on the same blocks.

Merging (:meth:`~.base.Adapter.merge`) folds each scale and shift into the affine parameters of
the module it follows: a norm's weight and bias (w' = w * gamma, b' = b * gamma + beta), or, for
a patch embedding without a norm, its convolution's weight and bias. A site whose module has
another adapter's output hook before SSF's (e.g. MoPPA after norm1) is refused: folding would
move SSF before that adapter.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..baselines import SSF_INITS, SSFAffine
from .base import Adapter, AdapterHost, BlockSite
from .hooks import OutputHook, hook_output
from .option_checks import check_bool, check_choice, check_number
from .registry import ADAPTERS

BLOCK_NORMS = ('norm1', 'norm2')


@dataclass(frozen=True)
class SSFOptions:
    """Options of the ``SSF`` adapter.

    Attributes:
        patch_embed: A site after the patch embedding (whatever blocks are adapted).
        final_norm: A site after the final norm, where the host has one.
        norm1: A site after norm1 of each adapted block.
        norm2: A site after norm2 of each adapted block.
        init: 'normal' (SSF's and the authors': gamma ~ N(1, std), beta ~ N(0, std), so the
            network differs from the pre-trained one at step 0) or 'identity' (1 and 0).
        std: Standard deviation of the 'normal' init.
    """
    patch_embed: bool = True
    final_norm: bool = True
    norm1: bool = False
    norm2: bool = True
    init: str = 'normal'
    std: float = 0.02

    def __post_init__(self) -> None:
        for name in ('patch_embed', 'final_norm', 'norm1', 'norm2'):
            check_bool(name, getattr(self, name))
        if not (self.patch_embed or self.final_norm or self.norm1 or self.norm2):
            raise ValueError('patch_embed, final_norm, norm1 and norm2 are all False: SSF '
                             'would have no site')
        check_choice('init', self.init, SSF_INITS)
        check_number('std', self.std, 0.0)

    @property
    def block_norms(self) -> tuple[str, ...]:
        return tuple(norm for norm in BLOCK_NORMS if getattr(self, norm))


@ADAPTERS.register_module()
class SSF(Adapter):
    """An :class:`SSFAffine` (2 C parameters, no weight decay) at each enabled site.

    Trainable parameters: ``2 * C_embed`` (patch embedding) + ``2 * C_final`` (final norm, if
    the host has one) + ``2 * D`` per adapted block and enabled block norm. Identity at init
    only with ``init='identity'``.
    """

    name = 'ssf'
    Options = SSFOptions
    mergeable = True

    def build(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        options = self.options
        self.blocks = nn.ModuleDict({
            str(site.index): nn.ModuleDict({norm: self._affine(site.width)
                                            for norm in options.block_norms})
            for site in sites if options.block_norms})
        self.patch_embed = (self._affine(host.sites()[0].width)
                            if options.patch_embed else None)
        final_norm = host.final_norm() if options.final_norm else None
        self.final_norm = None if final_norm is None else self._affine(
            _channels(final_norm, host.sites()[-1].width))

    def _affine(self, channels: int) -> SSFAffine:
        return SSFAffine(channels, self.options.init, self.options.std)

    def attach(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        self.site_modules: dict[str, nn.Module] = {}  # not submodules: the host's
        if self.patch_embed is not None:
            self.site_modules['patch_embed'] = host.patch_embed()
        if self.final_norm is not None:
            self.site_modules['final_norm'] = host.final_norm()
        for site in sites:
            for norm in self.options.block_norms:
                self.site_modules[f'{site.index}.{norm}'] = getattr(site, norm)
        for key, module in self.site_modules.items():
            hook_output(module, self, key)

    def merge_updates(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each site's scale and shift folded into the affine parameters before it.

        Raises:
            ValueError: another adapter acts on a site's output before SSF, or the module has
                no affine parameters to fold into.
        """
        pairs = []
        for key, module in self.site_modules.items():
            self._check_first_output_hook(key, module)
            affine = self.affine(key)
            weight, bias = _affine_parameters(module, key)
            shape = (-1,) + (1,) * (weight.dim() - 1)  # conv weights (C, 3, p, p)
            pairs.append((weight, weight * affine.scale.to(weight.dtype).reshape(shape)))
            pairs.append((bias, torch.addcmul(affine.shift, bias, affine.scale).to(bias.dtype)))
        return pairs

    def _check_first_output_hook(self, key: str, module: nn.Module) -> None:
        for hook in module._forward_hooks.values():
            if isinstance(hook, OutputHook) and hook.adapter is self and hook.key == key:
                return
            other = getattr(hook, 'adapter', None)
            if other is not None and other is not self:
                raise ValueError(f'SSF site {key!r}: {type(other).__name__} acts on the same '
                                 'output before SSF, so SSF cannot be folded into the module')

    def affine(self, key: str) -> SSFAffine:
        """The affine map of a site key: 'patch_embed', 'final_norm' or '{block}.{norm}'."""
        if key in ('patch_embed', 'final_norm'):
            return getattr(self, key)
        block, norm = key.split('.')
        return self.blocks[block][norm]

    def adapt_output(self, key: str, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """output * gamma + beta per channel (last dimension: tokens or NHWC maps)."""
        if self.merged:
            return output
        return self.affine(key)(output)

    def extra_repr(self) -> str:
        options = self.options
        return (f'blocks={self.block_indices}, norms={options.block_norms}, '
                f'patch_embed={options.patch_embed}, final_norm={self.final_norm is not None}, '
                f'init={options.init!r}')


def _channels(norm: nn.Module, default: int) -> int:
    """Channel count of a norm layer (LayerNorm's normalized_shape), else ``default``."""
    shape = getattr(norm, 'normalized_shape', None)
    return int(shape[-1]) if shape else default


def _affine_parameters(module: nn.Module, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel (weight, bias) that end ``module``'s output (of SSF site ``key``).

    A norm with an elementwise affine, or a patch embedding's norm, or (no norm) its
    projection convolution.
    """
    norm = getattr(module, 'norm', None)
    if hasattr(module, 'proj') and (norm is None or isinstance(norm, nn.Identity)):
        module = module.proj  # patch embedding without a norm: its convolution
    elif norm is not None:
        module = norm
    weight, bias = getattr(module, 'weight', None), getattr(module, 'bias', None)
    if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor):
        raise ValueError(f'SSF site {key!r}: {type(module).__name__} has no weight and bias to '
                         'fold the scale and shift into')
    return weight, bias
