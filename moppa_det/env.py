"""Report the software stack moppa_det runs on: ``python -m moppa_det.env``.

Prints the versions of the packages moppa_det needs, whether mmcv's compiled ops (RoIAlign,
NMS; Mask R-CNN cannot run without them) load and work, and the GPUs torch sees. Exits with
status 1, naming what is missing, when a package or the ops are missing.
"""
from __future__ import annotations

import importlib
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from moppa_det.version import __version__

PACKAGES = ('torch', 'torchvision', 'mmengine', 'mmcv', 'mmdet', 'timm', 'pycocotools',
            'numpy')
FIX_HINT = 'Run `make env` (tools/setup_env.sh) to build the environment.'


def import_package(name: str) -> tuple[str | None, str]:
    """Imports a package and reads its version.

    Args:
        name: Import name of the package (the same as its distribution name here).

    Returns:
        ``(version, '')`` on success (``'unknown'`` when it states none), else
        ``(None, why it does not import)``.
    """
    try:
        module = importlib.import_module(name)
    except Exception as error:  # noqa: BLE001  (a broken install raises more than ImportError)
        return None, f'{type(error).__name__}: {error}'
    version = getattr(module, '__version__', None)
    if version is None:  # pycocotools has no __version__
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = 'unknown'
    return str(version), ''


def check_mmcv_ops() -> tuple[bool, str]:
    """Runs mmcv's compiled NMS and RoIAlign on tiny CPU tensors.

    Returns:
        ``(True, '')`` when both give the expected result, else ``(False, reason)``.
    """
    try:
        import torch
        from mmcv.ops import RoIAlign, nms

        boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
        scores = torch.tensor([0.9, 0.8, 0.7])
        _, keep = nms(boxes, scores, iou_threshold=0.5)
        if keep.tolist() != [0, 2]:
            return False, f'nms kept boxes {keep.tolist()}, expected [0, 2]'
        # A constant feature map: every aligned sample must equal that constant.
        features = torch.full((1, 2, 8, 8), 3.0)
        rois = torch.tensor([[0., 1., 1., 6., 6.]])
        pooled = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2)(features, rois)
        if pooled.shape != (1, 2, 2, 2) or not torch.allclose(pooled, torch.full_like(pooled, 3)):
            return False, f'RoIAlign returned {pooled.flatten().tolist()}, expected all 3.0'
    except Exception as error:  # noqa: BLE001  (ImportError, or the ops' own RuntimeError)
        return False, f'{type(error).__name__}: {error}'
    return True, ''


def cuda_report() -> dict[str, Any]:
    """Describes the CUDA devices torch sees.

    Returns:
        ``available`` (bool), torch's CUDA build version and the GPU names.
    """
    try:
        import torch
    except ImportError:
        return dict(available=False, torch_cuda=None, gpus=[])
    available = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if available else []
    return dict(available=available, torch_cuda=torch.version.cuda, gpus=gpus)


def collect_report() -> dict[str, Any]:
    """Collects versions, the state of mmcv's ops and CUDA.

    Returns:
        ``moppa_det`` (version and directory), ``python`` (str), ``packages`` (name ->
        version, None when it does not import),
        ``import_errors`` (name -> why, for those), ``ops_loaded`` (bool), ``ops_error``
        (str, empty when fine) and ``cuda`` (see :func:`cuda_report`).
    """
    imported = {name: import_package(name) for name in PACKAGES}
    packages = {name: version for name, (version, _) in imported.items()}
    ops_loaded, ops_error = check_mmcv_ops() if packages['mmcv'] else (False, 'mmcv missing')
    return dict(moppa_det=f'{__version__} ({Path(__file__).parent})',  # which checkout runs
                python=f'{platform.python_version()} ({sys.executable})', packages=packages,
                import_errors={name: why for name, (_, why) in imported.items() if why},
                ops_loaded=ops_loaded, ops_error=ops_error, cuda=cuda_report())


def problems(report: dict[str, Any]) -> list[str]:
    """Lists what keeps moppa_det from running.

    Args:
        report: Output of :func:`collect_report`.

    Returns:
        One message per problem; empty when everything is in place.
    """
    found = [f'{name} does not import ({why})' for name, why in report['import_errors'].items()]
    if report['packages']['mmcv'] and not report['ops_loaded']:
        found.append("mmcv's compiled ops (RoIAlign, nms) do not work: "
                     f"{report['ops_error']}; mmcv must be built with MMCV_WITH_OPS=1")
    return found


def format_report(report: dict[str, Any]) -> str:
    """Renders the report as aligned ``name: value`` lines.

    Args:
        report: Output of :func:`collect_report`.

    Returns:
        The text to print.
    """
    cuda = report['cuda']
    rows = [('moppa_det', report.get('moppa_det', '')), ('python', report['python'])]
    rows += [(name, version or 'MISSING') for name, version in report['packages'].items()]
    rows.append(('mmcv ops', 'ok (RoIAlign, nms)' if report['ops_loaded']
                 else f"NOT LOADED ({report['ops_error']})"))
    rows.append(('CUDA', f"available, torch built for {cuda['torch_cuda']}"
                 if cuda['available'] else f"not available (torch built for {cuda['torch_cuda']})"))
    rows += [(f'GPU {i}', name) for i, name in enumerate(cuda['gpus'])]
    width = max(len(name) for name, _ in rows)
    return '\n'.join(f'{name:<{width}} : {value}' for name, value in rows)


def main() -> int:
    """Prints the report and any problems.

    Returns:
        0 when everything moppa_det needs is in place, 1 otherwise.
    """
    report = collect_report()
    print(format_report(report))
    found = problems(report)
    if found:
        print('\nmoppa_det cannot run:\n' + '\n'.join(f'  - {p}' for p in found)
              + f'\n{FIX_HINT}', file=sys.stderr)
        return 1
    where = 'a GPU' if report['cuda']['available'] else 'the CPU only (no GPU seen)'
    print(f'\nready: every package imports and mmcv\'s ops work; training runs on {where}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
