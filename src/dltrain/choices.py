"""The option chosen in each config group (`optimizer=momentum`, `init=he`…): Hydra's `hydra.runtime.choices`.
The composed config holds only what an option set (sgd and momentum both read `torch.optim.SGD`), so the HParams
tab and the sweep report name the options from here: the running job's Hydra config, or a run directory's
`.hydra/hydra.yaml`. List groups (`regularizer=[dropout,l2]`) are not among Hydra's choices; their overrides are."""
from __future__ import annotations

from pathlib import Path


def _plain(choices) -> dict[str, str]:
    return {str(group): str(option) for group, option in (choices or {}).items()
            if option is not None and not str(group).startswith(("hydra/", "schema/"))}


def run_choices(run_dir: str | Path) -> dict[str, str]:
    """{group: option} from `<run_dir>/.hydra/hydra.yaml`, {} when it has none (a run made from Python)."""
    import yaml

    path = Path(run_dir) / ".hydra" / "hydra.yaml"
    try:
        node = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return {}
    return _plain(((node or {}).get("hydra") or {}).get("runtime", {}).get("choices"))


def current_choices(run_dir: str | Path | None = None) -> dict[str, str]:
    """The running Hydra job's choices, else those saved in `run_dir`."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return _plain(HydraConfig.get().runtime.choices)
    return run_choices(run_dir) if run_dir is not None else {}
