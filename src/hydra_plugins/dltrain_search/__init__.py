"""dltrain's Hydra sweepers (Hydra builds sweepers only from the `hydra_plugins` namespace):
`optuna_sweeper.OptunaSweeper` for `hparams_search=optuna|random`, `basic.BasicSweeper` for plain `-m` sweeps."""
