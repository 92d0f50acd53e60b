"""Installation of moppa_det: MoPPA adapters for MMDetection 3.x on timm backbones."""
import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def read_version() -> str:
    """Reads ``__version__`` from ``moppa_det/version.py`` without importing the package."""
    text = (ROOT / 'moppa_det' / 'version.py').read_text()
    return re.search(r"__version__ = '([^']+)'", text).group(1)


setup(
    name='moppa_det',
    version=read_version(),
    description='Mixture of Physical Priors Adapter (MoPPA) for COCO detection and instance '
    'segmentation with MMDetection 3.x on frozen timm ViT and Swin backbones',
    long_description=(ROOT / 'README.md').read_text() if (ROOT / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['moppa_det', 'moppa_det.*']),
    python_requires='>=3.10',
    # The tested set (see README, "Environment"); mmcv must be built with its ops, which
    # `make env` does, so it is named here but not fetched as a wheel by pip.
    install_requires=[
        'torch>=2.6',
        'torchvision',
        'mmengine==0.10.7',
        'mmcv>=2.0.0,<2.2.0',
        'mmdet==3.3.0',
        'timm>=1.0.20',
        'pycocotools>=2.0.7',
        'numpy',
        'safetensors',
    ],
    extras_require={
        'tests': ['pytest', 'scipy', 'onnx', 'onnxruntime', 'matplotlib'],
        'convert': ['onnx'],
    },
    license='Apache-2.0',
)
