"""tools/analysis_tools/config_stats.py: the counts it writes are the
metafiles' (tests/test_model_index.py checks those against the built
models), and it writes the table, the JSON and the plot."""
import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location(
    'config_stats', REPO / 'tools/analysis_tools/config_stats.py')
config_stats = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(config_stats)


def metafile_entry(config: str) -> dict:
    meta = yaml.safe_load((REPO / Path(config).parent / 'metafile.yml').read_text())
    return next(m for m in meta['Models'] if m['Config'] == config)


def test_config_stats_counts_match_the_metafile_and_table(tmp_path):
    config = 'configs/ssdlite/ssdlite_mobilenetv2_8xb24-600e_coco.py'
    md, js = tmp_path / 'zoo.md', tmp_path / 'zoo.json'
    rows = config_stats.main(['--configs', str(REPO / config), '--no-latency', '--md', str(md),
                              '--json', str(js), '--quiet'])
    entry = metafile_entry(config)
    assert rows[0]['config'] == config
    assert rows[0]['params'] == entry['Metadata']['Parameters'] == json.loads(
        js.read_text())['configs'][0]['params']
    assert rows[0]['madds'] == entry['Metadata']['MAdds']
    # the V2 paper's SSDLite: 4.3M parameters, 0.8B MAdds (Table 6)
    assert abs(rows[0]['params'] / 4.3e6 - 1) < 0.02
    assert abs(rows[0]['madds'] / 0.8e9 - 1) < 0.02
    assert '| [ssdlite_mobilenetv2_8xb24-600e_coco](../configs/ssdlite/' \
           'ssdlite_mobilenetv2_8xb24-600e_coco.py) | detection | 320×320 | 4.34M | 0.789B |' \
           in md.read_text()


def test_config_stats_times_plain_and_fused_and_plots(tmp_path):
    config = REPO / 'configs/ssdlite/ssdlite_mobilenetv3-large_synthetic.py'
    plot = tmp_path / 'latency.png'
    rows = config_stats.main(['--configs', str(config), '--repeats', '1', '--warmup', '0',
                              '--md', str(tmp_path / 'zoo.md'), '--plot', str(plot), '--quiet'])
    assert rows[0]['input'] == [192, 192]
    assert rows[0]['latency_ms'] > 0 and rows[0]['latency_fused_ms'] > 0
    assert Image.open(plot).size[0] > 400
    assert 'CPU ms, fused' in (tmp_path / 'zoo.md').read_text()


def test_a_partial_run_never_rewrites_the_model_zoo_page(tmp_path, capsys):
    zoo = REPO / 'docs' / 'model_zoo.md'
    before = zoo.read_bytes()
    config = str(REPO / 'configs' / 'ssdlite' / 'ssdlite_mobilenetv3-small_8xb24-600e_coco.py')
    # the help's example, without --md: the table is printed, the page left alone
    rows = config_stats.main(['--configs', config, '--no-latency', '--quiet'])
    assert len(rows) == 1
    out = capsys.readouterr().out
    assert '| [ssdlite_mobilenetv3-small_8xb24-600e_coco]' in out and 'wrote' not in out
    # named explicitly, the page is refused before anything is measured
    for argv in (['--md', str(zoo)], ['--md', str(tmp_path / 'zoo.md'), '--plot',
                                      str(REPO / 'docs' / 'model_zoo_latency.png')]):
        with pytest.raises(SystemExit, match=r'docs/model_zoo.* partial one \(\d+ of \d+ configs '
                                             r'left out, no latency'):
            config_stats.main(['--configs', config, '--no-latency', '--quiet'] + argv)
    with pytest.raises(SystemExit, match=r'partial one \(\d+ of \d+ configs left out\)'):
        config_stats.main(['--configs', config, '--md', str(zoo), '--quiet'])
    assert zoo.read_bytes() == before
