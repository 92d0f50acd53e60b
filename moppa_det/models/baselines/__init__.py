"""PEFT baselines (pure torch) for fair comparisons with MoPPA: the maths of LoRA, AdaptFormer,
SSF and RLRR, which the adapters of ``moppa_det.models.adapters`` place in the backbones."""
from .adaptformer import AdaptFormerAdapter
from .lora import LoRALinear, LoRAUpdate
from .rlrr import RLRR_INITS, RLRRUpdate
from .ssf import SSF_INITS, SSFAffine

__all__ = ['LoRALinear', 'LoRAUpdate', 'AdaptFormerAdapter', 'SSFAffine', 'SSF_INITS',
           'RLRRUpdate', 'RLRR_INITS']
