"""After-the-run tools: the sweep report, evaluating a saved run, the initialisation check, ensembles."""
