"""The speed benchmarks run and write their reports (no timing assertions)."""
import importlib.util
import json
from pathlib import Path

import pytest

from mbn_backbones.deployment import onednn_fusion_available
from mbn_backbones.utils import count_madds

BENCHMARKS = Path(__file__).resolve().parents[1] / 'benchmarks'
FORMS = ('eager', 'channels_last', 'deploy', 'frozen')


@pytest.fixture
def load_benchmark(monkeypatch):
    # the scripts import their shared helpers as ``common``, from their own folder
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f'{name}.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


def test_benchmark_writes_throughputs_gflops_and_ratios_against_torchvision(tmp_path,
                                                                             load_benchmark):
    torchvision = pytest.importorskip('torchvision')
    out = tmp_path / 'speed.json'
    assert load_benchmark('backbone_speed').main([
        '--archs', 'v3_small', '--batches', '1', '2', '--size', '64', '--rounds', '2',
        '--warmup', '0', '--calls-batch1', '1', '--threads', '1', '--out', str(out)]) == 0
    report = json.loads(out.read_text())
    assert report['targets'] == {'eager_vs_torchvision': 1.0, 'frozen_vs_torchvision': 2.0}
    assert report['machine']['threads'] == 1 and report['machine']['cpu']
    assert [(r['arch'], r['batch']) for r in report['results']] == [('v3_small', 1), ('v3_small', 2)]
    tv_madds = count_madds(torchvision.models.mobilenet_v3_small().features, (1, 3, 64, 64))
    for row in report['results']:
        ips = row['images_per_s']
        assert set(ips) == {'torchvision', *(f'ours_{form}' for form in FORMS)}
        assert all(v > 0 for v in ips.values())
        faults = row['page_faults_per_call']
        assert set(faults) == set(ips) and all(isinstance(v, int) and v >= 0
                                               for v in faults.values())
        # the same layers: the same MAdds, and GFLOP/s = 2 x MAdds x images/s
        assert row['madds_per_image'] == {'torchvision': tv_madds, 'ours': tv_madds}
        assert row['gflops']['ours_frozen'] == pytest.approx(
            2 * tv_madds * ips['ours_frozen'] / 1e9, rel=0.01, abs=0.01)
        for form in FORMS:
            assert row[f'{form}_vs_torchvision'] == pytest.approx(
                ips[f'ours_{form}'] / ips['torchvision'], rel=0.01)
        assert row['frozen_onednn_fused'] is onednn_fusion_available()
        assert row['meets_targets'] == (row['eager_vs_torchvision'] >= 1.0
                                        and row['frozen_vs_torchvision'] >= 2.0)
    assert report['beyond_peak'] == []


def test_bad_arguments_are_named(capsys, load_benchmark):
    with pytest.raises(SystemExit):
        load_benchmark('backbone_speed').parse_args(['--batches', '0'])
    assert '--batches must all be >= 1, got [0]' in capsys.readouterr().err
    for name in ('ssdlite_speed', 'lraspp_speed'):
        with pytest.raises(SystemExit):
            load_benchmark(name).parse_args(['--warmup', '-1'])
        assert '--warmup must be >= 0, got -1' in capsys.readouterr().err


def test_configs_resolve_in_mmdet_and_mmseg_and_a_bad_name_is_named(load_benchmark):
    common = load_benchmark('common')
    assert Path(common.resolve_config(
        'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py')).is_file()
    assert Path(common.resolve_config(
        'mmseg::mobilenet_v3/mobilenet-v3-d8_lraspp_4xb4-320k_cityscapes-512x1024.py')).is_file()
    with pytest.raises(FileNotFoundError, match=r"ssd/nope\.py is not in .*mmdet"):
        common.resolve_config('mmdet::ssd/nope.py')
    with pytest.raises(FileNotFoundError, match=r"mmpretrain::a\.py is not a file"):
        common.resolve_config('mmpretrain::a.py')


def test_a_figure_above_the_nominal_peak_is_flagged(load_benchmark, capsys):
    common = load_benchmark('common')
    info = common.machine(threads=2)
    if info['peak_gflops'] is None:
        pytest.skip('no clock in /proc/cpuinfo here')
    assert common.gflops(300_000_000, 1000.0) == 600.0
    flagged = common.beyond_peak({'plausible': 1.0, 'impossible': 10 * info['peak_gflops']}, info)
    assert flagged == ['impossible']
    assert 'impossible at' in capsys.readouterr().err
