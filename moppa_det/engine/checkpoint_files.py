"""Checkpoint files on a local disk: atomic writes, validation, the latest good one.

A checkpoint is written under a temporary name, flushed to disk (``fsync``) and only then
renamed into place (``os.replace`` is atomic on POSIX): a killed run leaves either the previous
file or the complete new one, never half a checkpoint under a checkpoint's name.
``last_checkpoint`` gets the same treatment. On resume, a latest checkpoint that is truncated or
corrupt (a disk fault, a copy gone wrong, a file written by other tools) is reported by name and
the newest good one is used instead.
"""
from __future__ import annotations

import os
import os.path as osp
import re
import zipfile
from typing import Callable

# Names CheckpointHook gives (``filename_tmpl`` 'iter_{}.pth' / 'epoch_{}.pth').
CHECKPOINT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')
PARTIAL_SUFFIX = '.partial'


class CheckpointReadError(ValueError):
    """A file given or found as a checkpoint cannot be read as one."""


def partial_name(filename: str) -> str:
    """The temporary name a checkpoint is written under: hidden, never matching a checkpoint."""
    return f'.{filename}{PARTIAL_SUFFIX}'


def fsync_path(path: str) -> None:
    """Flushes a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(temporary: str, final: str) -> None:
    """Makes a completely written ``temporary`` file appear as ``final``, durably.

    Args:
        temporary: The written file, in the same directory as ``final``.
        final: Its name once complete; an existing file is replaced atomically.
    """
    fsync_path(temporary)
    os.replace(temporary, final)
    fsync_path(osp.dirname(osp.abspath(final)))


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` so that readers see the old or the new content, never half."""
    temporary = osp.join(osp.dirname(osp.abspath(path)), partial_name(osp.basename(path)))
    with open(temporary, 'w') as file:
        file.write(text)
    commit(temporary, path)


def check_checkpoint_file(path: str, load: Callable[[str], object] | None = None) -> None:
    """Raises :class:`CheckpointReadError` naming ``path`` if it is not a readable checkpoint.

    torch's format is a zip archive: its central directory (at the end, so missing when the file
    is truncated) and every member's CRC-32 are checked by reading the file once. A file that is
    not a zip archive (torch's legacy format, or no checkpoint at all) is loaded with ``load``.

    Args:
        path: Local file.
        load: Loader for non-zip files (moppa_det's safe loader); not checked further when None.
    """
    if not osp.isfile(path):
        raise CheckpointReadError(f'checkpoint {path} does not exist')
    if osp.getsize(path) == 0:
        raise CheckpointReadError(f'checkpoint {path} is empty (0 bytes)')
    with open(path, 'rb') as file:
        head = file.read(4)
    if zipfile.is_zipfile(path):
        _check_archive(path)
    elif head.startswith(b'PK'):
        raise CheckpointReadError(f'checkpoint {path} is truncated or corrupt (a zip archive '
                                  'without its central directory)')
    elif load is not None:
        load(path)  # its errors name the file (see safe_checkpoint.load_from_local_safe)
    elif not head.startswith(b'\x80'):  # nor torch's legacy pickle format
        raise CheckpointReadError(f'{path} is not a checkpoint (it starts with {head!r})')


def _check_archive(path: str) -> None:
    """Reads every member of a zip checkpoint once, checking its CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CheckpointReadError(f'checkpoint {path} is corrupt ({error})') from None
    if bad is not None:
        raise CheckpointReadError(f'checkpoint {path} is corrupt (CRC mismatch in {bad})')
    if not any(name == 'data.pkl' or name.endswith('/data.pkl') for name in names):
        raise CheckpointReadError(f'{path} is a zip archive but not a torch checkpoint '
                                  '(no data.pkl)')


def numbered_checkpoints(directory: str) -> list[str]:
    """Checkpoints named like CheckpointHook's in ``directory``, newest (highest number) first."""
    if not osp.isdir(directory):
        return []
    found = [(int(match.group(1)), name) for name in os.listdir(directory)
             if (match := CHECKPOINT_NAME.match(name))]
    return [osp.join(directory, name) for _, name in sorted(found, reverse=True)]


def latest_good_checkpoint(work_dir: str, warn: Callable[[str], None],
                           load: Callable[[str], object] | None = None) -> str | None:
    """The checkpoint to resume from: the one ``last_checkpoint`` names, or the newest good one.

    Args:
        work_dir: The run's work directory (holding ``last_checkpoint``).
        warn: Called with a message for every candidate that is skipped.
        load: Loader for checkpoints that are not zip archives (see :func:`check_checkpoint_file`).

    Returns:
        A readable checkpoint's path, or None when the directory holds no checkpoint at all.

    Raises:
        CheckpointReadError: If checkpoints exist but none is readable (each is named).
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = open(pointer).read().strip() if osp.isfile(pointer) else ''
    directory = osp.dirname(named) if named else work_dir
    candidates = ([named] if named else []) + [
        path for path in numbered_checkpoints(directory) if osp.abspath(path) != osp.abspath(named)]
    problems = []
    for path in candidates:
        try:
            check_checkpoint_file(path, load)
        except CheckpointReadError as error:
            problems.append(str(error))
            warn(f'{error}; trying the previous checkpoint')
            continue
        return path
    if problems:
        raise CheckpointReadError('no readable checkpoint to resume from in '
                                  f'{directory}:\n  ' + '\n  '.join(problems))
    return None
