"""The adapter interface: one PEFT method hosted by a timm backbone.

An adapter finds where it attaches **by structure** — the sites of each transformer block that
the backbone describes (:class:`BlockSite`) — creates its parameters for those sites and
registers forward hooks there (:mod:`.hooks`). The pre-trained modules stay where timm put them,
so state-dict names stay timm's; the adapter's own parameters live in the backbone's
``adapters`` dict, so "trainable" means "inside an adapter", never a name pattern.

What a backbone offers an adapter is the :class:`AdapterHost` protocol: its block sites, its
patch embedding and final norm, and the (B, H, W, C) map view of a block's input with each
image's valid grid (the host owns the token/map conversion and the prefix tokens,
:class:`MapRestore`). Map adapters implement ``adapt_map(site, map, valid, out=None)``: without
autograd the hook passes ``out``, a map inside the tensor it will return, and the adapter writes
its result there and returns ``out``.

Inference (:mod:`.inference`): adapters whose update is a fixed change of frozen weights
(``mergeable``: LoRA, RLRR, SSF) fold it into them with :meth:`Adapter.merge` and take it out
again with :meth:`Adapter.unmerge`, as PEFT's tuner layers; their hooks pass outputs through
while merged. Input-independent values of the spectral adapters are cached in ``eval()``
(:class:`~moppa_det.ops.param_cache.ParamCache`), cleared by ``train()`` and by loading.
"""
from __future__ import annotations

import dataclasses
import itertools
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Sequence

import torch
from torch import nn

from ...ops.param_cache import ParamCache
from ..moppa.config import _from_mapping
from .layout import MapRestore

GridSizes = Sequence[tuple[int, int]]

LINEAR_ROLES = ('qkv', 'proj', 'fc1', 'fc2')
# Orders merges across adapters, so that the host unmerges last-merged first.
_MERGE_COUNTER = itertools.count()


@dataclass(frozen=True, eq=False)
class BlockSite:
    """The attachment points of one transformer block, found by structure.

    Attributes:
        index: Position of the block among all blocks of the model, in forward order.
        block: The timm block (ViT ``Block`` or Swin ``SwinTransformerBlock``).
        width: Channel width D of the block.
        num_heads: Attention heads of the block.
        stage: Stage of the block (0 for a plain ViT).
        stride: Feature stride of the block's grid, in input pixels.
    """
    index: int
    block: nn.Module
    width: int
    num_heads: int
    stage: int
    stride: int

    def linear(self, role: str) -> nn.Linear:
        """The block's linear layer of a role: 'qkv', 'proj' (attention output), 'fc1', 'fc2'."""
        owner, attribute = {'qkv': ('attn', 'qkv'), 'proj': ('attn', 'proj'),
                            'fc1': ('mlp', 'fc1'), 'fc2': ('mlp', 'fc2')}[role]
        layer = getattr(getattr(self.block, owner), attribute)
        if not isinstance(layer, nn.Linear):
            raise TypeError(f'block {self.index}: {owner}.{attribute} is a '
                            f'{type(layer).__name__}, not an nn.Linear')
        return layer

    @property
    def norm1(self) -> nn.Module:
        """The norm whose output the attention sees."""
        return self.block.norm1

    @property
    def norm2(self) -> nn.Module:
        """The norm whose output the MLP sees."""
        return self.block.norm2

    @property
    def mlp_branch_output(self) -> nn.Module:
        """The last module of the MLP branch before the residual add (LayerScale if any)."""
        return getattr(self.block, 'ls2', None) or self.block.mlp


def linear_targets(sites: list[BlockSite], roles: tuple[str, ...]) -> dict[str, nn.Linear]:
    """The blocks' linear layers of ``roles``, keyed '<block index>.<role>'.

    Adapters keep this as a plain dict, not submodules: the layers belong to the host.
    """
    return {f'{site.index}.{role}': site.linear(role) for site in sites for role in roles}


class AdapterHost(Protocol):
    """What a backbone offers its adapters."""

    def sites(self) -> list[BlockSite]:
        """Every block of the model, in forward order."""

    def patch_embed(self) -> nn.Module:
        """The patch embedding (its output: ViT (B, N, D) tokens, Swin (B, H, W, C) maps)."""

    def final_norm(self) -> nn.Module | None:
        """The norm applied to the outputs, if any."""

    def map_view(self, x: torch.Tensor, site: BlockSite
                 ) -> tuple[torch.Tensor, GridSizes | None, MapRestore]:
        """A block input or norm output as a (B, H, W, C) map of its patches.

        Returns:
            (map, valid grid size of each image or None when all of it is valid, restore), where
            ``restore`` turns a new map back into the layout of ``x`` with prefix tokens
            unchanged, and offers a map to write it into (:meth:`MapRestore.output_map`).
        """


class Adapter(nn.Module):
    """Base of every adapter type.

    Subclasses set ``name`` (their key in ``backbone.adapters``) and ``Options`` (a frozen
    dataclass of their options, validated in ``__post_init__``), and implement ``build`` and
    ``attach``. Auxiliary losses and logged statistics are recorded per forward in
    ``self.records`` (a dict keyed per block, so activation checkpointing's recomputation
    overwrites instead of doubling), cleared by the host at the start of every forward.

    Args:
        options: The adapter's options.
        host: The backbone.
        sites: The blocks the adapter is put into.
    """

    name: ClassVar[str]
    Options: ClassVar[type]
    # Options that shape only the training loss (not the weights' meaning): a checkpoint made
    # with other values of these still loads.
    training_options: ClassVar[tuple[str, ...]] = ()
    # The update is a fixed change of frozen tensors that :meth:`merge` can fold into them.
    mergeable: ClassVar[bool] = False

    def __init__(self, options: Any, host: AdapterHost, sites: list[BlockSite]) -> None:
        super().__init__()
        self.options = options
        self.block_indices = [site.index for site in sites]
        self.records: dict[str, Any] = {}
        self.merged = False
        self.merge_order = -1
        # (frozen tensor, its value before the merge, its fingerprint right after the merge).
        self._originals: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
        self.register_load_state_dict_post_hook(_clear_caches_after_load)
        self.build(host, sites)

    @classmethod
    def parse_options(cls, options: dict[str, Any] | None, label: str) -> Any:
        """Builds ``Options`` from a mapping; unknown keys and bad values name the field."""
        try:
            return _from_mapping(cls.Options, options, label)
        except (TypeError, ValueError) as error:
            message = str(error)
            raise ValueError(message if message.startswith(label) else f'{label}: {message}'
                             ) from None

    def build(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        """Creates the adapter's parameters for ``sites``."""
        raise NotImplementedError

    def attach(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        """Registers the adapter's hooks on the host's modules."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """Initialises the adapter (as when built).

        Only the outermost submodules with a ``reset_parameters`` are reset: they initialise
        their own children (a zero-init ``nn.Linear`` inside a unit must not get
        ``nn.Linear``'s default init afterwards).
        """
        _reset_outermost(self)

    def clear_records(self) -> None:
        """Forgets what the last forward recorded."""
        self.records = {}

    def auxiliary_losses(self, progress: float) -> dict[str, torch.Tensor]:
        """Losses to add to the detector's loss dict (keys with 'loss') and statistics to log
        (keys without 'loss'), from the last forward.

        Args:
            progress: Fraction of training done, in [0, 1].
        """
        return {}

    # ------------------------------------------------------------------ inference
    def train(self, mode: bool = True) -> 'Adapter':
        if mode and self.merged:
            warnings.warn(f'{type(self).__name__} is merged into the frozen weights: its '
                          'parameters get no gradient until the backbone unmerges it',
                          stacklevel=2)
        self.clear_inference_caches()
        return super().train(mode)

    def clear_inference_caches(self) -> None:
        """Forgets the input-independent values cached for inference (see ``ParamCache``)."""
        for module in self.modules():
            for value in vars(module).values():
                if isinstance(value, ParamCache):
                    value.clear()

    def merge_updates(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(frozen tensor, its merged value) pairs, computed from the current frozen tensors.

        Raises:
            TypeError: the adapter's update depends on the input (it cannot be merged).
        """
        raise TypeError(f'{type(self).__name__} cannot be merged into the frozen weights: its '
                        'update is not a fixed change of them (it depends on the input)')

    @torch.no_grad()
    def merge(self, safe_merge: bool = False, keep_original: bool = True) -> None:
        """Folds the update into the frozen tensors in place; the hooks then pass through.

        Args:
            safe_merge: Check the merged values for NaN/inf before writing them (PEFT's
                ``safe_merge``).
            keep_original: Keep a copy of the frozen tensors, so that :meth:`unmerge` restores
                them bit for bit; ``False`` saves the memory, and unmerging is then refused.

        Raises:
            ValueError: ``safe_merge`` found non-finite values (nothing was written).
        """
        if self.merged:
            warnings.warn(f'{type(self).__name__} is already merged. Nothing to do.',
                          stacklevel=2)
            return
        pairs = self.merge_updates()
        if safe_merge and not all(torch.isfinite(value).all() for _, value in pairs):
            raise ValueError(f'{type(self).__name__}: NaNs or infs in the merged weights; '
                             'the adapter is broken, nothing was merged')
        originals = [target.detach().clone() if keep_original else None for target, _ in pairs]
        for target, value in pairs:
            target.copy_(value)
        self._originals = [(target, original, _fingerprint(target))
                           for (target, _), original in zip(pairs, originals)]
        self.merged, self.merge_order = True, next(_MERGE_COUNTER)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restores the frozen tensors of before :meth:`merge` exactly (from the kept copy).

        Raises:
            RuntimeError: merged without ``keep_original``, or a frozen tensor was written since
                the merge (another adapter merged into it later: unmerge that one first; or
                weights were loaded).
        """
        if not self.merged:
            warnings.warn(f'{type(self).__name__} is already unmerged. Nothing to do.',
                          stacklevel=2)
            return
        for target, original, fingerprint in self._originals:
            if original is None:
                raise RuntimeError(f'{type(self).__name__} was merged with keep_original=False: '
                                   'the frozen weights of before the merge are gone')
            if not torch.equal(_fingerprint(target), fingerprint):
                raise RuntimeError(f'{type(self).__name__}: a frozen tensor it merged into was '
                                   'written since; unmerge adapters merged after it first')
        for target, original, _ in self._originals:
            target.copy_(original)
        self._originals, self.merged, self.merge_order = [], False, -1

    def describe(self) -> dict[str, Any]:
        """The adapter's identity for checkpoints: type, options and blocks."""
        return dict(type=type(self).__name__, options=_jsonable(dataclasses.asdict(self.options)),
                    blocks=list(self.block_indices))

    def extra_repr(self) -> str:
        return f'blocks={self.block_indices}'


def _fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    """Sums that change when a tensor is written with other values (version counters cannot
    tell a later adapter's exact unmerge from a write)."""
    values = tensor.detach().double()
    return torch.stack([values.sum(), values.abs().sum(), values.square().sum()])


def _clear_caches_after_load(module: Adapter, incompatible_keys: Any) -> None:
    """Load post-hook (a function, not a bound method, so that deep copies clear their own)."""
    module.clear_inference_caches()


def _reset_outermost(module: nn.Module) -> None:
    for child in module.children():
        if hasattr(child, 'reset_parameters'):
            child.reset_parameters()
        else:
            _reset_outermost(child)


def _jsonable(value: Any) -> Any:
    """Tuples to lists, recursively, so a description equals its JSON round trip."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value
