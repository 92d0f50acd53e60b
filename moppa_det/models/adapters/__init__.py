"""PEFT adapters hosted by the timm backbones, each attached by module structure.

Types: ``MoPPA`` (ours), ``MoPPAPaper`` (the authors' formulation), ``LoRA``, ``AdaptFormer``,
``SSF``, ``RLRR``; the authors' whole recipe is ``[MoPPAPaper, RLRR, SSF]``.
"""
from .adaptformer import AdaptFormer, AdaptFormerOptions
from .base import LINEAR_ROLES, Adapter, AdapterHost, BlockSite
from .layout import MapRestore
from .lora import LoRA, LoRAOptions
from .moppa import MoPPA, MoPPAOptions
from .moppa_paper import MoPPAPaper, MoPPAPaperOptions
from .registry import ADAPTERS, adapter_class, build_adapter, normalise_specs
from .rlrr import RLRR, RLRROptions
from .ssf import SSF, SSFOptions

__all__ = ['ADAPTERS', 'Adapter', 'AdapterHost', 'BlockSite', 'LINEAR_ROLES', 'MapRestore',
           'MoPPA', 'MoPPAOptions', 'MoPPAPaper', 'MoPPAPaperOptions', 'adapter_class',
           'build_adapter', 'normalise_specs', 'LoRA', 'LoRAOptions', 'AdaptFormer',
           'AdaptFormerOptions', 'SSF', 'SSFOptions', 'RLRR', 'RLRROptions']
