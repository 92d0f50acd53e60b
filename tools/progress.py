"""Runs a demo step quietly: one updating progress line instead of MMEngine's wide log lines.

MMEngine writes every log line to ``work_dir/<timestamp>/<timestamp>.log`` whatever the terminal
shows, so the terminal can be given something a person can follow: the step, the iteration,
the loss and the ETA on one line that is rewritten in place (on a terminal) or printed once per
logged iteration (in a CI log). Everything the step prints is also kept in a console file, and
its tail is shown when the step fails.
"""
from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# MMEngine's LogProcessor: "Iter(train) [ 20/700]  base_lr: ...  eta: 0:11:30  ...  loss: 2.61 ..."
_ITER = re.compile(r'Iter\((?P<mode>train|val|test)\)\s*\[\s*(?P<iter>\d+)/(?P<total>\d+)\]')
_ETA = re.compile(r'\beta: (?P<eta>[\d:, a-z]+?)\s{2}')
_LOSS = re.compile(r'\bloss: (?P<loss>[-\d.]+(?:e[-+]?\d+)?)')
_ANSI = re.compile(r'\x1b\[[0-9;]*m')
TAIL_LINES = 40


@dataclass
class Progress:
    """What one MMEngine log line says about where a run stands."""

    mode: str
    iteration: int
    total: int
    eta: str | None = None
    loss: float | None = None


def parse_log_line(line: str) -> Progress | None:
    """The progress an MMEngine iteration log line reports, or None for any other line."""
    found = _ITER.search(line)
    if not found:
        return None
    eta, loss = _ETA.search(line), _LOSS.search(line)
    return Progress(found['mode'], int(found['iter']), int(found['total']),
                    eta['eta'] if eta else None, float(loss['loss']) if loss else None)


def clock(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f'{hours}:{minutes:02d}:{secs:02d}' if hours else f'{minutes}:{secs:02d}'


def format_progress(label: str, progress: Progress | None, elapsed: float) -> str:
    """One short line: ``train  iter 120/700 (17%)  loss 1.234  ETA 0:10:25  elapsed 2:10``."""
    if progress is None:
        return f'  {label}  starting (building the model, loading data)  elapsed {clock(elapsed)}'
    word = 'iter' if progress.mode == 'train' else progress.mode  # e.g. the validation at the end
    parts = [f'  {label}  {word} {progress.iteration}/{progress.total} '
             f'({100 * progress.iteration // max(progress.total, 1)}%)']
    if progress.loss is not None:
        parts.append(f'loss {progress.loss:.3f}')
    if progress.eta:
        parts.append(f'ETA {progress.eta}')
    parts.append(f'elapsed {clock(elapsed)}')
    return '  '.join(parts)


class StatusLine:
    """A line rewritten in place on a terminal; elsewhere each new text is printed once."""

    def __init__(self, stream: IO[str] = sys.stdout) -> None:
        self.stream, self.live, self.width, self.last = stream, stream.isatty(), 0, ''

    def show(self, text: str, changed: bool) -> None:
        """Shows ``text``; off a terminal only when ``changed`` (so CI logs are not flooded)."""
        if self.live:
            self.stream.write('\r' + text.ljust(self.width))
            self.width = len(text)
        elif changed and text != self.last:
            self.stream.write(text + '\n')
        self.last = text
        self.stream.flush()

    def close(self) -> None:
        """Ends the live line so that later output starts on a fresh line."""
        if self.live and self.width:
            self.stream.write('\n')
            self.stream.flush()


def _pump(pipe: IO[str], lines: queue.Queue) -> None:
    """Moves the child's output lines into ``lines``; None marks its end."""
    for line in pipe:
        lines.put(line)
    lines.put(None)


def run_with_progress(command: list[str], label: str, console_file: Path, cwd: Path,
                      status: StatusLine | None = None) -> float:
    """Runs ``command`` with its output going to ``console_file`` and a progress line.

    Args:
        command: The command (its MMEngine log lines are parsed for the progress line).
        label: Name of the step on the progress line, e.g. ``'train'``.
        console_file: Everything the command prints, colour codes removed.
        cwd: Working directory of the command.
        status: Where the progress line goes (the terminal by default).

    Returns:
        The wall time of the command in seconds.

    Raises:
        SystemExit: when the command fails; the message holds the tail of its output.
    """
    status = status or StatusLine()
    console_file.parent.mkdir(parents=True, exist_ok=True)
    start, progress, tail = time.time(), None, []
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    with open(console_file, 'w') as console, subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors='replace') as child:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(child.stdout, lines), daemon=True).start()
        status.show(format_progress(label, None, 0), changed=True)
        while True:
            try:
                line = lines.get(timeout=1.0)  # the timeout keeps the elapsed time ticking
            except queue.Empty:
                status.show(format_progress(label, progress, time.time() - start), changed=False)
                continue
            if line is None:
                break
            line = _ANSI.sub('', line)
            console.write(line)
            tail = (tail + [line.rstrip('\n')])[-TAIL_LINES:]
            found = parse_log_line(line)
            changed = found is not None
            progress = found or progress
            status.show(format_progress(label, progress, time.time() - start), changed)
        returncode = child.wait()
    status.close()
    if returncode != 0:
        raise SystemExit('\n'.join(tail) + f'\n\ndemo step "{label}" failed (exit {returncode}): '
                         f'{" ".join(command)}\nits whole output: {console_file}')
    return time.time() - start
