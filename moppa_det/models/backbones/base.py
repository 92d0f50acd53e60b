"""The adapter host: a pre-trained timm backbone, frozen or not, with PEFT adapters in it.

The timm model is kept whole (its state-dict names stay timm's) and, unless ``frozen=False``,
frozen when the backbone is built. Adapters (``adapter=``: MoPPA, MoPPAPaper, LoRA, AdaptFormer,
SSF, RLRR, or a list of them) live beside it in ``self.adapters`` and act through forward hooks
on the sites they attach to (see ``moppa_det.models.adapters``). The host owns what the adapters
must not each re-derive: the (B, H, W, C) map view of a block's tokens, the prefix tokens, each
image's valid grid in a padded batch, and the per-forward records of auxiliary losses.

Checkpoints: the state dict carries ``_extra_state``, the backbone's identity (timm name, sha256
of the pre-trained weights, frozen or not, every adapter's type, options and blocks). Loading a
state dict made for another model or other adapters is refused naming the difference; a state
dict without the frozen weights (an adapter-only checkpoint) is completed from the backbone's
own weights when loaded, but only if the hash matches.

Deployment: :meth:`TimmAdapterBackbone.merge_adapters` folds LoRA, RLRR and SSF into the frozen
weights in place (PEFT's ``merge_adapter``) and :meth:`~TimmAdapterBackbone.unmerge_adapters`
restores them exactly (see :mod:`moppa_det.models.adapters.inference`). A merged backbone's
meta names the merged adapters (``merged``), and such a state dict is refused when loaded: its
frozen weights are not the pre-trained ones its hash names. Loading into a merged backbone is
refused too (unmerge first).
"""
from __future__ import annotations

from typing import Any

import torch
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from timm.layers import use_reentrant_ckpt
from torch import nn

from ..adapters import BlockSite, build_adapter, normalise_specs
from ..adapters.inference import merge_adapters, merged_adapter_names, unmerge_adapters
from ..progress import training_progress
from .autocast import check_autocast_dtype, resolve_autocast_dtype
from .input_checks import output_size
from .meta import (
    EXTRA_STATE_KEY,
    FROZEN_PREFIX,
    BackboneCheckpointMismatch,
    adapters_of_meta,
    compare_adapters,
    encode_meta,
    read_meta,
    rename_v1_keys,
)
from .timm_factory import create_timm_model, weights_sha256

META_VERSION = 2


class _Unset:
    """Marks the ``moppa`` argument as not given (``None`` means: no adapter)."""

    def __repr__(self) -> str:
        return 'UNSET'


UNSET = _Unset()


class TimmAdapterBackbone(BaseModule):
    """A pre-trained timm model hosting PEFT adapters.

    Subclasses build the family's timm model, describe its blocks (:meth:`sites`), implement
    :meth:`forward_maps` and :meth:`map_view`, and call :meth:`add_adapters` at the end of their
    ``__init__``.

    Args:
        model_name: timm model name.
        pretrained: Load timm's own pre-trained weights (needs network access).
        checkpoint: Local weight file (.safetensors/.pth), loaded through timm's filter.
        adapter: One adapter config (``dict(type='LoRA', rank=8)``), a type name
            (``'MoPPA'``), a list of them (``[dict(type='MoPPAPaper'), 'RLRR', 'SSF']``), or
            ``None`` for none (the frozen backbone). Each config may set ``blocks``.
        moppa: Shorthand for ``adapter=dict(type='MoPPA', **moppa)``; ``None``: no adapter.
        adapter_blocks: Indices (over all blocks, in forward order) of the blocks that get
            adapters, unless an adapter sets its own ``blocks``; ``None``: every block.
        unit_blocks: Former name of ``adapter_blocks``.
        frozen: Freeze the pre-trained weights (``False``: full fine-tuning of the same model).
        per_image_grids: Spectral adapters filter each image on its own valid grid (given by
            the detector through :meth:`set_image_sizes`); ``False``: over the padded batch
            canvas, as before moppa_det 0.2 (for comparisons only: an image's features then
            depend on its batch-mates).
        with_cp: Activation checkpointing of every block (timm's, non-reentrant).
        autocast_dtype: Run the backbone under ``torch.autocast`` with this dtype ('bfloat16'
            or 'float16'; spectral paths stay float32); outputs are float32. 'auto':
            bfloat16 where the hardware computes it natively (CUDA with bf16; CPUs with
            AVX512-BF16 or AMX), float32 elsewhere. On CPUs, where MMEngine's AMP wrapper is
            not available, bfloat16 made the frozen ViT-S 2.0x faster on a 2-core AVX512-BF16
            machine and 20x slower (emulated bfloat16) on an AVX2-only one
            (tools/analysis/benchmark_backbone_dtype.py).
        drop_path_rate: Stochastic depth of the pre-trained blocks.
        img_size: Nominal image size the timm model is built for.
        model_kwargs: Extra keyword arguments for ``timm.create_model`` (e.g. a smaller depth).
        init_cfg: Must be ``None``: the timm weights come from ``pretrained``/``checkpoint``.
    """

    timm_class: type[nn.Module]
    # Keyword arguments every model of the family needs for detection inputs.
    timm_kwargs: dict[str, Any] = {}

    def __init__(self, *, model_name: str, pretrained: bool = False,
                 checkpoint: str | None = None, adapter: Any = 'MoPPA',
                 moppa: dict[str, Any] | None | _Unset = UNSET,
                 adapter_blocks: list[int] | None = None, unit_blocks: list[int] | None = None,
                 frozen: bool = True, per_image_grids: bool = True, with_cp: bool = False,
                 autocast_dtype: str | None = None,
                 drop_path_rate: float = 0.0, img_size: int | tuple[int, int] | None = None,
                 model_kwargs: dict[str, Any] | None = None, init_cfg: dict | None = None) -> None:
        if init_cfg is not None:
            raise ValueError('init_cfg is not supported by moppa_det backbones: they load their '
                             'weights when built (use pretrained=True or checkpoint=PATH).')
        super().__init__()
        check_autocast_dtype(autocast_dtype)
        if unit_blocks is not None and adapter_blocks is not None:
            raise ValueError('model.backbone: give adapter_blocks or its former name '
                             'unit_blocks, not both')
        self.model_name = model_name
        self.frozen = frozen
        self.per_image_grids = per_image_grids
        self.with_cp = with_cp
        self.autocast_dtype = autocast_dtype
        kwargs = dict(self.timm_kwargs, drop_path_rate=drop_path_rate)
        if img_size is not None:
            kwargs['img_size'] = img_size
        kwargs.update(model_kwargs or {})
        self.model = create_timm_model(model_name, pretrained, checkpoint, self.timm_class,
                                       **kwargs)
        self.model.requires_grad_(not frozen)
        self.adapters = nn.ModuleDict()
        self._adapter_specs = _adapter_specs(adapter, moppa)
        self._default_blocks = adapter_blocks if adapter_blocks is not None else unit_blocks
        self._pending_image_sizes: list[tuple[int, int]] | None = None
        self._image_sizes: list[tuple[int, int]] | None = None
        self._weights_sha256: str | None = None
        self.register_load_state_dict_pre_hook(self._check_and_complete_state)

    # ----------------------------------------------------------------- subclass interface
    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 3, H, W) images to the declared NCHW output maps."""
        raise NotImplementedError

    def sites(self) -> list[BlockSite]:
        """Every block of the model, in forward order, described by structure."""
        raise NotImplementedError

    def map_view(self, x: torch.Tensor, site: BlockSite):
        """See :class:`moppa_det.models.adapters.AdapterHost`."""
        raise NotImplementedError

    def unused_modules(self) -> list[nn.Module]:
        """Parts of the timm model the features never use (classifier head, unused norms and
        blocks): kept frozen under full fine-tuning, so that DDP with
        ``find_unused_parameters=False`` sees a gradient for every trainable parameter."""
        return []

    def patch_embed(self) -> nn.Module:
        return self.model.patch_embed

    def final_norm(self) -> nn.Module | None:
        return None

    # --------------------------------------------------------------------- adapters
    def add_adapters(self) -> None:
        """Builds the configured adapters and attaches them (subclasses call this last)."""
        if self.with_cp:
            if use_reentrant_ckpt():
                raise ValueError('with_cp=True needs non-reentrant checkpointing (reentrant '
                                 'checkpointing gives frozen-backbone adapters no gradient): '
                                 'unset the TIMM_REENTRANT_CKPT environment variable')
            self.model.set_grad_checkpointing(True)
        if not self.frozen:
            for module in self.unused_modules():
                module.requires_grad_(False)
        sites = self.sites()
        for spec in self._adapter_specs:
            label = f'model.backbone.adapter[{spec["type"]!r}]'
            blocks = spec.pop('blocks', self._default_blocks)
            chosen = [sites[index] for index in _check_blocks(blocks, len(sites), label)]
            adapter = build_adapter(spec, self, chosen, label)
            if adapter.name in self.adapters:
                raise ValueError(f'model.backbone.adapter: {type(adapter).__name__} is given '
                                 'twice; give it once with all its targets')
            self.adapters[adapter.name] = adapter
            adapter.attach(self, chosen)
            MMLogger.get_current_instance().debug(
                f'{self.model_name}: {type(adapter).__name__} in blocks {adapter.block_indices}')

    def set_image_sizes(self, sizes: list[tuple[int, int]] | None) -> None:
        """Valid (h, w) in input pixels of each image of the next forward's padded batch.

        Consumed by the next forward; without it the whole input is valid.
        """
        self._pending_image_sizes = None if sizes is None else [
            (int(h), int(w)) for h, w in sizes]

    def valid_grids(self, batch: int, stride: int, full: tuple[int, int]
                    ) -> list[tuple[int, int]] | None:
        """Each image's valid grid at ``stride`` (clipped to ``full``), or None: all valid."""
        if (not self.per_image_grids or self._image_sizes is None
                or len(self._image_sizes) != batch):
            return None
        grids = [tuple(min(side, limit) for side, limit in zip(output_size(h, w, stride), full))
                 for h, w in self._image_sizes]
        return None if all(grid == tuple(full) for grid in grids) else grids

    def auxiliary_losses(self) -> dict[str, torch.Tensor]:
        """The adapters' losses ('loss' in the key) and logged statistics of the last forward."""
        terms: dict[str, torch.Tensor] = {}
        progress = training_progress()
        for adapter in self.adapters.values():
            for key, value in adapter.auxiliary_losses(progress).items():
                if key in terms:
                    raise ValueError(f'two adapters report the auxiliary term {key!r}')
                terms[key] = value
        return terms

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Features of a batch of images (B, 3, H, W): one NCHW map per ``out_channels`` entry."""
        self._image_sizes, self._pending_image_sizes = self._pending_image_sizes, None
        if self._image_sizes is not None and len(self._image_sizes) != x.shape[0]:
            raise ValueError(f'{len(self._image_sizes)} image sizes given for a batch of '
                             f'{x.shape[0]} images')
        for adapter in self.adapters.values():
            adapter.clear_records()
        dtype = resolve_autocast_dtype(self.autocast_dtype, x.device.type)
        if dtype is None:
            return self.forward_maps(x)
        with torch.autocast(device_type=x.device.type, dtype=dtype):
            outputs = self.forward_maps(x)
        return tuple(output.float() for output in outputs)

    # -------------------------------------------------------------- train / init
    def init_weights(self) -> None:
        """Deliberately leaves the pre-trained timm model and the adapters untouched.

        MMEngine calls this after building; timm's own ``init_weights`` would re-initialise the
        pre-trained weights, and the adapters are initialised when built.
        """
        self._is_init = True

    def train(self, mode: bool = True) -> 'TimmAdapterBackbone':
        super().train(mode)
        if self.frozen:  # whatever happened meanwhile, frozen stays frozen
            self.model.requires_grad_(False)
        return self

    # --------------------------------------------------------------------- deployment
    def merge_adapters(self, names: list[str] | None = None, safe_merge: bool = False,
                       keep_original: bool = True) -> list[str]:
        """Folds LoRA/RLRR/SSF (all of them, or ``names``) into the frozen weights in place.

        Returns:
            Keys of the adapters merged. See :func:`~..adapters.inference.merge_adapters`.
        """
        _ = self.weights_sha256  # the identity stays that of the pre-trained weights
        return merge_adapters(self.adapters, names, safe_merge, keep_original)

    def unmerge_adapters(self) -> list[str]:
        """Restores the frozen weights of before :meth:`merge_adapters`, bit for bit."""
        return unmerge_adapters(self.adapters)

    @property
    def merged_adapters(self) -> list[str]:
        """Keys of the adapters merged into the frozen weights."""
        return merged_adapter_names(self.adapters)

    # ------------------------------------------------------------------ checkpoints
    @property
    def weights_sha256(self) -> str:
        if self._weights_sha256 is None:
            self._weights_sha256 = weights_sha256(self.model)
        return self._weights_sha256

    def meta(self) -> dict[str, Any]:
        """The backbone's identity: timm name, weights hash, frozen or not, adapters."""
        meta = dict(version=META_VERSION, model_name=self.model_name,
                    weights_sha256=self.weights_sha256, frozen=self.frozen,
                    adapters=[adapter.describe() for adapter in self.adapters.values()])
        if self.merged_adapters:  # absent otherwise: unmerged metas stay as they were
            meta['merged'] = self.merged_adapters
        return meta

    def get_extra_state(self) -> torch.Tensor:
        return encode_meta(self.meta())

    def set_extra_state(self, state: Any) -> None:
        """Checked in :meth:`_check_and_complete_state`, which sees the whole state dict."""

    def _check_and_complete_state(self, module: nn.Module, state_dict: dict[str, Any],
                                  prefix: str, *args: Any) -> None:
        """Load pre-hook: checks the backbone meta and fills in missing frozen weights.

        Raises:
            BackboneCheckpointMismatch: when the checkpoint names another model or other
                adapters, its meta cannot be read, or it holds no frozen weights and was made
                with other frozen weights.
        """
        if self.merged_adapters:
            raise RuntimeError(f'{self.merged_adapters} are merged into the frozen weights: '
                               'call unmerge_adapters() before loading a state dict')
        key = prefix + EXTRA_STATE_KEY
        meta = read_meta(state_dict.get(key), key) if key in state_dict else None
        if meta is not None and meta.get('version', 1) < META_VERSION:
            rename_v1_keys(state_dict, prefix)
        model_prefix = prefix + FROZEN_PREFIX
        has_frozen = any(name.startswith(model_prefix) for name in state_dict)
        if meta is None:
            if not has_frozen:
                MMLogger.get_current_instance().warning(
                    'checkpoint has neither backbone weights nor backbone meta; using the '
                    f'backbone weights built from the config ({self.model_name}).')
        else:
            self._check_meta(meta, has_frozen)
        state_dict[key] = self.get_extra_state()
        if has_frozen:  # the checkpoint's frozen weights replace ours: hash them anew
            self._weights_sha256 = None
        else:
            for name, value in self.model.state_dict().items():
                state_dict[model_prefix + name] = value

    def _check_meta(self, meta: dict[str, Any], has_frozen: bool) -> None:
        if meta.get('merged'):
            raise BackboneCheckpointMismatch(
                f'checkpoint was saved with {meta["merged"]} merged into its frozen weights (a '
                'deployment copy); load one saved before merge_adapters() or after '
                'unmerge_adapters()')
        if meta.get('model_name') != self.model_name:
            raise BackboneCheckpointMismatch(
                f'checkpoint was made for backbone {meta.get("model_name")!r}, but the config '
                f'builds {self.model_name!r}.')
        difference = compare_adapters(adapters_of_meta(meta),
                                      [a.describe() for a in self.adapters.values()],
                                      {a.describe()['type']: type(a).training_options
                                       for a in self.adapters.values()})
        if difference:
            raise BackboneCheckpointMismatch(f'checkpoint does not fit the configured adapters: '
                                             f'{difference}.')
        if not has_frozen and meta.get('weights_sha256') != self.weights_sha256:
            raise BackboneCheckpointMismatch(
                f'checkpoint holds only the trained parameters and was made with {self.model_name} '
                f'weights of sha256 {str(meta.get("weights_sha256", "?"))[:16]}..., but the '
                f'config built weights of sha256 {self.weights_sha256[:16]}... (another '
                'pretrained file or checkpoint=): load the same backbone weights as in training.')


def _adapter_specs(adapter: Any, moppa: Any) -> list[dict[str, Any]]:
    """The adapter configs of the backbone arguments (``moppa=`` is MoPPA's shorthand)."""
    if not isinstance(moppa, _Unset):
        if adapter != 'MoPPA':
            raise ValueError('model.backbone: give adapter=... or its MoPPA shorthand moppa=..., '
                             'not both')
        return [] if moppa is None else [dict(moppa, type='MoPPA')]
    if isinstance(adapter, str):
        adapter = dict(type=adapter)
    elif isinstance(adapter, (list, tuple)):
        adapter = [dict(type=item) if isinstance(item, str) else item for item in adapter]
    return normalise_specs(adapter)


def _check_blocks(blocks: Any, count: int, label: str) -> list[int]:
    """Validated block indices (``None``: all ``count`` blocks)."""
    if blocks is None:
        return list(range(count))
    indices = list(blocks)
    for index in indices:
        if not isinstance(index, int) or not 0 <= index < count:
            raise ValueError(f'{label}: block {index!r} does not exist; the model has {count} '
                             f'blocks (0..{count - 1})')
    if len(set(indices)) != len(indices):
        raise ValueError(f'{label}: blocks {indices} name a block twice')
    return sorted(indices)


__all__ = ['TimmAdapterBackbone', 'UNSET']
