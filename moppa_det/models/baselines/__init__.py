"""PEFT baselines (pure torch) for fair comparisons with MoPPA: LoRA and AdaptFormer."""
from .adaptformer import AdaptFormerAdapter
from .lora import LoRALinear

__all__ = ['LoRALinear', 'AdaptFormerAdapter']
