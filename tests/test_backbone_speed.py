"""benchmarks/backbone_speed.py runs and writes its report (no timing assertions)."""
import importlib.util
import json
from pathlib import Path

import pytest

from mbn_backbones.deployment import onednn_fusion_available

BENCH = Path(__file__).resolve().parents[1] / 'benchmarks' / 'backbone_speed.py'


def load_benchmark():
    spec = importlib.util.spec_from_file_location('backbone_speed', BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_writes_throughputs_and_ratios_against_torchvision(tmp_path):
    pytest.importorskip('torchvision')
    out = tmp_path / 'speed.json'
    assert load_benchmark().main(['--archs', 'v3_small', '--batches', '1', '2', '--size', '64',
                                  '--rounds', '2', '--warmup', '0', '--calls-batch1', '1',
                                  '--threads', '1', '--out', str(out)]) == 0
    report = json.loads(out.read_text())
    assert report['targets'] == {'eager_vs_torchvision': 1.0, 'frozen_vs_torchvision': 2.0}
    assert [(r['arch'], r['batch']) for r in report['results']] == [('v3_small', 1), ('v3_small', 2)]
    for row in report['results']:
        ips = row['images_per_s']
        assert set(ips) == {'torchvision', 'ours_eager', 'ours_deploy', 'ours_frozen'}
        assert all(v > 0 for v in ips.values())
        faults = row['page_faults_per_call']
        assert set(faults) == set(ips) and all(isinstance(v, int) and v >= 0
                                               for v in faults.values())
        assert row['eager_vs_torchvision'] == pytest.approx(
            ips['ours_eager'] / ips['torchvision'], rel=0.01)
        assert row['frozen_vs_torchvision'] == pytest.approx(
            ips['ours_frozen'] / ips['torchvision'], rel=0.01)
        assert row['frozen_onednn_fused'] is onednn_fusion_available()
        assert row['meets_targets'] == (row['eager_vs_torchvision'] >= 1.0
                                        and row['frozen_vs_torchvision'] >= 2.0)


def test_bad_arguments_are_named(capsys):
    with pytest.raises(SystemExit):
        load_benchmark().parse_args(['--batches', '0'])
    assert '--batches must all be >= 1, got [0]' in capsys.readouterr().err
