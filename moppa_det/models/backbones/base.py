"""The shared base of the MoPPA-wrapped timm backbones.

The timm model is kept whole and untouched (so its state-dict names stay timm's) and frozen
when the backbone is built. MoPPA units live beside it in ``self.units`` and reach into the
blocks through forward hooks on each block's ``norm1``: after it ('after_norm', attention sees
a + s*Delta(a)) or before it ('before_norm').

Checkpoints: the state dict carries ``_extra_state`` (model name and a sha256 of the frozen
weights). A state dict without the frozen weights (an adapter-only checkpoint) is completed
from the backbone's own weights when loaded, but only if the hash matches, so ``tools/test.py``
and ``--resume`` work from such checkpoints and refuse one made for other weights.
"""
from __future__ import annotations

from typing import Any

import torch
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..moppa import MoPPAConfig, MoPPAUnit
from .meta import EXTRA_STATE_KEY, FROZEN_PREFIX, decode_meta, encode_meta
from .timm_factory import create_timm_model, weights_sha256

META_VERSION = 1


class BackboneCheckpointMismatch(ValueError):
    """A checkpoint was made for another backbone; the message says what differs."""


class TimmMoPPABackbone(BaseModule):
    """A frozen timm model with MoPPA units before the attention of (some of) its blocks.

    Subclasses build the timm model, list its blocks and implement ``forward``.

    Args:
        model_name: timm model name.
        pretrained: Load timm's own pre-trained weights (needs network access).
        checkpoint: Local weight file (.safetensors/.pth), loaded through timm's filter.
        moppa: Options of the units (see :class:`MoPPAConfig`); ``None``: no units.
        unit_blocks: Indices (over all blocks, in order) of the blocks that get a unit;
            ``None``: every block.
        with_cp: Non-reentrant activation checkpointing of every block.
        autocast_dtype: Run the backbone under ``torch.autocast`` with this dtype ('bfloat16'
            or 'float16'; the units' spectral path stays float32); outputs are float32. On
            CPUs, where MMEngine's AMP wrapper is not available, bfloat16 made the frozen
            ViT-S 2.0x faster on a 2-core AVX512-BF16 machine
            (tools/analysis/benchmark_backbone_dtype.py).
        drop_path_rate: Stochastic depth of the (frozen) blocks.
        img_size: Nominal image size the timm model is built for.
        model_kwargs: Extra keyword arguments for ``timm.create_model`` (e.g. a smaller depth).
        init_cfg: Must be ``None``: the timm weights come from ``pretrained``/``checkpoint``.
    """

    timm_class: type[nn.Module]
    # Keyword arguments every model of the family needs for detection inputs.
    timm_kwargs: dict[str, Any] = {}

    def __init__(self, model_name: str, pretrained: bool = False, checkpoint: str | None = None,
                 moppa: dict[str, Any] | None = None, unit_blocks: list[int] | None = None,
                 with_cp: bool = False, autocast_dtype: str | None = None,
                 drop_path_rate: float = 0.0, img_size: int | tuple[int, int] | None = None,
                 model_kwargs: dict[str, Any] | None = None, init_cfg: dict | None = None) -> None:
        if init_cfg is not None:
            raise ValueError('init_cfg is not supported by MoPPA backbones: they load their '
                             'weights when built (use pretrained=True or checkpoint=PATH).')
        super().__init__()
        self.model_name = model_name
        self.with_cp = with_cp
        if autocast_dtype not in (None, 'bfloat16', 'float16'):
            raise ValueError(f"autocast_dtype={autocast_dtype!r}: use None, 'bfloat16' or "
                             "'float16'")
        self.autocast_dtype = getattr(torch, autocast_dtype) if autocast_dtype else None
        kwargs = dict(self.timm_kwargs, drop_path_rate=drop_path_rate)
        if img_size is not None:
            kwargs['img_size'] = img_size
        kwargs.update(model_kwargs or {})
        self.model = create_timm_model(model_name, pretrained, checkpoint, self.timm_class,
                                       **kwargs)
        self.model.requires_grad_(False)
        self.unit_config = (MoPPAConfig.from_dict(moppa, label='model.backbone.moppa')
                            if moppa is not None else None)
        self.units = self._build_units(unit_blocks)
        self._token_layout: tuple[tuple[int, int], int] | None = None
        self._weights_sha256: str | None = None
        self.register_load_state_dict_pre_hook(self._complete_frozen_state)

    # ----------------------------------------------------------------- subclass interface
    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 3, H, W) images to the declared NCHW output maps."""
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:
        """The transformer blocks of the timm model, in forward order."""
        raise NotImplementedError

    def block_width(self, block: nn.Module) -> int:
        """Channel width D of a block (the width its norm1 normalises)."""
        return block.norm1.normalized_shape[0]

    # ------------------------------------------------------------------------ units
    def _build_units(self, unit_blocks: list[int] | None) -> nn.ModuleDict:
        units = nn.ModuleDict()
        if self.unit_config is None:
            return units
        blocks = self.blocks()
        indices = range(len(blocks)) if unit_blocks is None else list(unit_blocks)
        for index in indices:
            if not 0 <= index < len(blocks):
                raise ValueError(f'unit_blocks: block {index} does not exist; '
                                 f'{self.model_name} has {len(blocks)} blocks')
            units[str(index)] = MoPPAUnit(self.block_width(blocks[index]), self.unit_config)
            hook = _UnitHook(self, str(index), self.unit_config.placement == 'before_norm')
            if hook.before_norm:
                blocks[index].norm1.register_forward_pre_hook(hook)
            else:
                blocks[index].norm1.register_forward_hook(hook)
        return units

    def adapt(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Applies unit ``name`` to a block's norm1 input/output (tokens or a (B, H, W, D) map)."""
        unit = self.units[name]
        if x.dim() == 4:
            return unit(x)
        if self._token_layout is None:
            raise RuntimeError('MoPPA units on ViT tokens need the token grid: call the '
                               f'{type(self).__name__} backbone, not its timm .model directly')
        grid, num_prefix_tokens = self._token_layout
        try:
            return unit(x, grid=grid, num_prefix_tokens=num_prefix_tokens)
        except ValueError as error:
            raise ValueError(f'MoPPA unit of block {name} ({self.model_name}): {error}') from error

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Features of a batch of images (B, 3, H, W): one NCHW map per ``out_channels`` entry."""
        if self.autocast_dtype is None:
            return self.forward_maps(x)
        with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
            outputs = self.forward_maps(x)
        return tuple(output.float() for output in outputs)

    def run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Runs one block, with non-reentrant checkpointing when ``with_cp`` and training.

        Reentrant checkpointing would give the units no gradient: the frozen block's input
        does not require grad.
        """
        if self.with_cp and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def route_statistics(self) -> dict[str, dict[str, torch.Tensor]]:
        """Routing of the last forward, per unit: 'mean_alpha' (P,) with grad, 'entropy' ()."""
        return {name: dict(mean_alpha=unit.last_mean_alpha, entropy=unit.last_token_entropy)
                for name, unit in self.units.items() if unit.last_mean_alpha is not None}

    # -------------------------------------------------------------- train / init
    def init_weights(self) -> None:
        """Deliberately leaves the pre-trained timm model and the zero-init units untouched.

        MMEngine calls this after building; timm's own ``init_weights`` would re-initialise the
        pre-trained weights and the units are initialised when built.
        """
        self._is_init = True

    def train(self, mode: bool = True) -> 'TimmMoPPABackbone':
        super().train(mode)
        self.model.requires_grad_(False)  # whatever happened meanwhile, frozen stays frozen
        return self

    # ------------------------------------------------------------------ checkpoints
    @property
    def weights_sha256(self) -> str:
        if self._weights_sha256 is None:
            self._weights_sha256 = weights_sha256(self.model)
        return self._weights_sha256

    def meta(self) -> dict[str, Any]:
        """The backbone's identity: timm name, sha256 of the frozen weights, unit config."""
        return dict(version=META_VERSION, model_name=self.model_name,
                    weights_sha256=self.weights_sha256,
                    moppa=None if self.unit_config is None else self.unit_config.to_dict())

    def get_extra_state(self) -> torch.Tensor:
        return encode_meta(self.meta())

    def set_extra_state(self, state: Any) -> None:
        """Checked in :meth:`_complete_frozen_state`, which sees the whole state dict."""

    def _complete_frozen_state(self, module: nn.Module, state_dict: dict[str, Any], prefix: str,
                               *args: Any) -> None:
        """Load pre-hook: checks the backbone meta and fills in missing frozen weights.

        Raises:
            BackboneCheckpointMismatch: when the checkpoint names another model, or holds no
                frozen weights and was made with other frozen weights.
        """
        meta = decode_meta(state_dict.get(prefix + EXTRA_STATE_KEY))
        model_prefix = prefix + FROZEN_PREFIX
        has_frozen = any(key.startswith(model_prefix) for key in state_dict)
        if meta is None:
            state_dict[prefix + EXTRA_STATE_KEY] = self.get_extra_state()
            if not has_frozen:
                MMLogger.get_current_instance().warning(
                    'checkpoint has neither backbone weights nor backbone meta; using the '
                    f'backbone weights built from the config ({self.model_name}).')
        elif meta.get('model_name') != self.model_name:
            raise BackboneCheckpointMismatch(
                f'checkpoint was made for backbone {meta.get("model_name")!r}, but the config '
                f'builds {self.model_name!r}.')
        elif not has_frozen and meta.get('weights_sha256') != self.weights_sha256:
            raise BackboneCheckpointMismatch(
                f'checkpoint holds only the trained parameters and was made with {self.model_name} '
                f'weights of sha256 {meta.get("weights_sha256", "?")[:16]}..., but the config '
                f'built weights of sha256 {self.weights_sha256[:16]}... (another pretrained '
                'file or checkpoint=): load the same backbone weights as in training.')
        if has_frozen:  # the checkpoint's frozen weights replace ours: hash them anew
            self._weights_sha256 = None
        else:
            for key, value in self.model.state_dict().items():
                state_dict[model_prefix + key] = value


class _UnitHook:
    """Forward (pre-)hook on a block's norm1 that applies a unit of the backbone.

    A class rather than a closure so that ``copy.deepcopy`` of the backbone (EMA, model
    averaging) yields hooks that call the copy's units.
    """

    def __init__(self, backbone: TimmMoPPABackbone, name: str, before_norm: bool) -> None:
        self.backbone, self.name, self.before_norm = backbone, name, before_norm

    def __call__(self, module: nn.Module, args: tuple, *output: torch.Tensor) -> Any:
        if self.before_norm:
            return (self.backbone.adapt(self.name, args[0]), *args[1:])
        return self.backbone.adapt(self.name, output[0])
