"""scripts/check_init.py and dltrain.analysis.init_check: the course's initialisation picture on synthetic data."""
from __future__ import annotations

from dltrain.analysis.init_check import profile, std_ratio

DEEP = ["data=synthetic", "model.depth=10"]


def test_small_normal_init_collapses_activations_with_depth():
    assert std_ratio(profile([*DEEP, "activation=tanh", "init=normal"])) < 1e-3


def test_large_normal_init_saturates_tanh():
    res = profile([*DEEP, "activation=tanh", "init=normal_large"])
    assert min(r["saturated_frac"] for r in res["acts"]) > 0.5


def test_xavier_tanh_and_he_relu_stay_steady():
    for overrides in (["activation=tanh", "init=xavier"], ["activation=relu", "init=he"]):
        ratio = std_ratio(profile([*DEEP, *overrides]))
        assert 0.1 < ratio < 10, (overrides, ratio)


def test_script_prints_a_table_and_writes_the_plot(tmp_path, capsys):
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("check_init", ROOT / "scripts" / "check_init.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "init.png"
    assert script.main(["data=synthetic", "model.depth=3", "activation=tanh", "--each", "init=normal",
                        "--each", "init=xavier", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "act_std" in text and "block2" in text and "init=xavier" in text
    assert out.stat().st_size > 10_000
