"""scripts/evaluate.py's ensembles of separately trained runs (the mean of the members' softmax outputs, beside each
member's accuracy; members must share the data; every config trust-checked, every checkpoint weights-only) and
Monte-Carlo dropout (the mean softmax of N passes, dropout in train mode, norm layers in eval mode)."""
from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from dltrain import Trainer, build_model
from dltrain.analysis.ensemble import MCDropout
from dltrain.analysis.evaluate import evaluate_run
from dltrain.analysis.run_ensemble import evaluate_ensemble, member_dirs
from dltrain.data import build_datamodule
from tests.conftest import run_cli

SHORT = ("trainer.max_epochs=1", "trainer.limit_train_batches=6", "logger=none", "trainer.diagnostics_every_n_steps=0")


def saved_run(fast_cfg, run_dir, *overrides):
    """A run made from Python with the .hydra/config.yaml a CLI run has."""
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = fast_cfg(*SHORT, *overrides, output_dir=run_dir)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    Trainer(cfg).fit()
    return cfg


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from tests.conftest import FAST
    from dltrain.config import compose_config

    root = tmp_path_factory.mktemp("ensemble") / "sweep"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for seed in (0, 1, 2):
        saved_run(lambda *o, output_dir: compose_config([*FAST, *o], output_dir=output_dir), root / f"seed={seed}",
                  f"seed={seed}")
    torch.set_num_threads(threads)
    return root


def by_hand(runs, split="test"):
    """Each member's softmax on the split, from its best.pt (weights only), and the labels."""
    probs, y = [], None
    for run in runs:
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        model = build_model(cfg)
        model.load_state_dict(torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"])
        data = build_datamodule(cfg)
        x = torch.cat([xb for xb, _ in getattr(data, split)])
        y = torch.cat([yb for _, yb in getattr(data, split)])
        with torch.no_grad():
            probs.append(model.eval()(x).softmax(-1))
    return probs, y


def test_the_ensemble_is_the_mean_of_the_members_softmax(sweep):
    runs = member_dirs(sweep)
    assert [r.name for r in runs] == ["seed=0", "seed=1", "seed=2"]
    result = evaluate_ensemble(runs, device="cpu", write_to=sweep)
    probs, y = by_hand(runs)
    mean = sum(probs) / len(probs)
    assert result["samples"] == len(y)
    assert result["ensemble"]["test/acc"] == pytest.approx((mean.argmax(1) == y).float().mean().item())
    assert result["ensemble"]["test/nll"] == pytest.approx(-mean.gather(1, y[:, None]).log().mean().item(), rel=1e-5)
    for member, p in zip(result["members"], probs):
        assert member["test/acc"] == pytest.approx((p.argmax(1) == y).float().mean().item())
        assert member["test/nll"] != pytest.approx(result["ensemble"]["test/nll"], rel=1e-4)
    # the mean of the logits would be another prediction: the combination really is in probability space
    logits_nll = torch.nn.functional.cross_entropy(sum(p.log() for p in probs) / len(probs), y).item()
    assert result["ensemble"]["test/nll"] != pytest.approx(logits_nll, rel=1e-4)
    assert (sweep / "ensemble_test.json").is_file()


def test_the_cli_prints_the_ensemble_beside_each_member(sweep, tmp_path):
    proc = run_cli([f"ensemble={sweep}"], cwd=tmp_path, script="scripts/evaluate.py")
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("3 members, best.pt each")
    assert sum("test/acc=" in line for line in lines) == 4 and "ensemble (mean softmax)" in lines[-2]
    named = run_cli([f"run={sweep / 'seed=0'}", f"run={sweep / 'seed=1'}"], cwd=tmp_path,
                    script="scripts/evaluate.py")
    assert named.stdout.startswith("2 members")


def test_members_of_another_data_set_or_with_foreign_code_are_refused(sweep, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(sweep / "seed=0", other)
    config = yaml.safe_load((other / ".hydra" / "config.yaml").read_text())
    config["data"]["normalize"] = "minmax"
    (other / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_cli([f"run={sweep / 'seed=0'}", f"run={other}"], cwd=tmp_path, check=False, script="scripts/evaluate.py")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "the members must share the data set and classes; data.normalize='standardize' in seed=0, 'minmax' in other" \
        in proc.stderr
    config["data"]["normalize"] = "standardize"
    config["model"]["_target_"] = "os.system"
    (other / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_cli([f"run={sweep / 'seed=0'}", f"run={other}"], cwd=tmp_path, check=False, script="scripts/evaluate.py")
    assert proc.returncode == 2 and "model._target_='os.system' is not a callable" in proc.stderr


def test_mc_dropout_averages_passes_with_dropout_on_and_norms_in_eval(fast_cfg, tmp_path, one_thread):
    run = tmp_path / "run"
    cfg = saved_run(fast_cfg, run, "regularizer=dropout", "norm=batch")
    result = evaluate_run(run, split="val", device="cpu", mc_dropout=5)
    model = build_model(cfg)
    model.load_state_dict(torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"])
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    mc = MCDropout(model, 5).eval()
    assert all(m.training for m in mc.drops) and mc.drops
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    torch.manual_seed(int(cfg.seed))
    data = build_datamodule(cfg)
    with torch.no_grad():
        outputs = [(mc(x), y) for x, y in data.val]
    logp, y = torch.cat([o for o, _ in outputs]), torch.cat([t for _, t in outputs])
    assert result["val/acc"] == pytest.approx((logp.argmax(1) == y).float().mean().item())
    assert result["val/loss"] == pytest.approx(torch.nn.functional.nll_loss(logp, y).item(), rel=1e-5)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())  # no running statistic moved
    plain = evaluate_run(run, split="val", device="cpu", write=False)
    assert result["val/loss"] != pytest.approx(plain["val/loss"], rel=1e-6)  # the passes were stochastic


def test_mc_dropout_needs_a_dropout_layer(sweep, tmp_path):
    proc = run_cli([f"run={sweep / 'seed=0'}", "mc_dropout=4"], cwd=tmp_path, check=False, script="scripts/evaluate.py")
    assert proc.returncode == 2 and "has no dropout layer with p > 0" in proc.stderr
