"""Nothing the user asked for is silently ignored (issue 17 §2): a key that no component reads, in a node dltrain
owns (`+trainer.foo`) or in a callable's node (`optimizer.betaz`, `+init.foo`), is refused before any work with
exit status 2, naming the key and the keys that node accepts; the loss, optimizer and schedule are built during
the check, so their own refusals (`loss=hinge regularizer=label_smoothing`) come before any run directory too."""
from __future__ import annotations

import pytest

from dltrain.cli.commandline import check_command_line
from dltrain.config import compose_config
from tests.conftest import run_cli

UNREAD = [  # (command line, substrings of the message: the key, and some of the keys that node accepts)
    (["+regularizer.foo=1"], ["regularizer.foo", "no component reads it", "weight_noise", "dropout"]),
    (["+trainer.gradient_clip_val=1.0"], ["trainer.gradient_clip_val", "grad_clip", "max_epochs"]),
    (["+foo=1"], ["foo: no component reads it", "the config's top level", "trainer"]),
    (["+paths.x=1"], ["paths.x", "data_dir"]),
    (["+regularizer.early_stopping.foo=2"], ["regularizer.early_stopping.foo", "patience"]),
    (["+data.noise=0.3"], ["data.noise", "val_size", "folds"]),  # synthetic's key, not fashion_mnist's
    (["optimizer=adam", "+optimizer.betaz=[0.9,0.99]"], ["optimizer.betaz", "torch.optim.Adam", "betas", "amsgrad"]),
    (["optimizer=adam", "optimizer.betaz=[0.9,0.99]"], ["optimizer.betaz", "betas"]),
    (["+model.foo=1"], ["model.foo", "dltrain.models.mlp.MLP", "depth", "width", "init_from"]),
    (["+loss.foo=1"], ["loss.foo", "torch.nn.CrossEntropyLoss", "label_smoothing"]),
    (["scheduler=step", "+scheduler.foo=1"], ["scheduler.foo", "StepLR", "step_size", "interval"]),
    (["+scheduler.foo=1"], ["scheduler.foo", "its _target_ is null", "interval"]),
    (["init=he", "+init.foo=1"], ["init.foo", "he_normal", "gain", "bias"]),
    (["+init.foo=1"], ["init.foo", "keep_default"]),
    (["norm=batch", "+norm.foo=1"], ["norm.foo", "batch_norm", "affine", "momentum", "placement"]),
    (["+norm.affine=false"], ["norm.affine", "its _target_ is null", "placement"]),  # norm=none has no γ/β
    (["+activation.foo=1"], ["activation.foo", "torch.nn.ReLU", "inplace"]),
    (["+metrics.acc.foo=1"], ["metrics.acc.foo", "dltrain.nn.metrics.accuracy"]),
    (["+augment.shear=10"], ["augment.shear", "drop the '+'"]),  # a real key now: augment.shear=10 sets it
    (["loss=hinge", "regularizer=label_smoothing"], ["loss.label_smoothing=0.1", "MultiClassHinge",
                                                      "regularizer.label_smoothing=0"]),
    (["init=he", "init.gain=fan_avg"], ["init.gain='fan_avg'", "paper", "activation"]),
    (["init=he", "init.bias=.inf"], ["init.bias", "finite"]),
]


@pytest.mark.parametrize("args,expected", UNREAD, ids=[" ".join(a) for a, _ in UNREAD])
def test_an_unread_key_is_refused_before_any_work(args, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        check_command_line(["train.py", "data=fashion_mnist", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dltrain: invalid config:\n  - ") and "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)
    assert list(tmp_path.iterdir()) == []  # no outputs/, nothing at all


@pytest.mark.parametrize("args", [["augment.shear=10"], ["model=cnn", "norm=instance"], ["init=he", "init.gain=activation"],
                                  ["init=xavier", "init.gain=2.0", "init.bias=0.01"], ["norm=batch", "norm.affine=false"],
                                  ["regularizer=[weight_noise,dropout]"], ["augment=[flip,affine]"],
                                  ["data.folds=5", "data.fold=4"], ["data=synthetic", "data.noise=0.3"]])
def test_the_keys_that_are_read_pass(args):
    compose_config(args)  # raises ConfigError otherwise


@pytest.mark.slow
def test_the_real_entry_point_refuses_unread_keys_with_exit_2_and_no_run_dir(tmp_path):
    proc = run_cli(["+trainer.gradient_clip_val=1.0", "+regularizer.foo=1", "optimizer=adam",
                    "+optimizer.betaz=[0.9,0.99]"], cwd=tmp_path, check=False, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "dltrain: invalid config:" and len(lines) == 4, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "outputs").exists()
