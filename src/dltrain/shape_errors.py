"""Shape errors explained. A data/model mismatch that reaches the first training forward pass (a model that
the config check could not see, or data that is not what the config says) fails in torch with a bare
"mat1 and mat2 shapes cannot be multiplied". `explain` replays two samples of the training data through the
model (in eval mode, so that no running statistic moves and no random number is drawn) with a hook on every
layer, finds the layer that raised, and words the error with that
layer's name, the shape it got and the config keys that set the shapes (data.in_shape, model.*). The original
error stays chained to it, so train.log's traceback has both; the console gets the one line."""
from __future__ import annotations

import torch
from torch import nn


class ShapeError(RuntimeError):
    """The model cannot take the data's tensors; the message names the layer, the shape and the keys."""


def failing_layer(model: nn.Module, x: torch.Tensor):
    """(layer path, layer, shape of its input, torch's message) of the innermost module whose forward raised on
    `x`; None when the forward pass runs."""
    entered: list[tuple[str, nn.Module, list[int]]] = []

    def pre(name):
        def hook(module, args):
            shape = list(args[0].shape) if args and isinstance(args[0], torch.Tensor) else []
            entered.append((name, module, shape))
        return hook

    def post(module, args, out):
        entered.pop()

    modes = {m: m.training for m in model.modules()}
    model.eval()
    handles = []
    for name, module in model.named_modules():
        if name:  # the model itself is not a layer
            handles += [module.register_forward_pre_hook(pre(name)), module.register_forward_hook(post)]
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:  # noqa: BLE001 - any failure of the forward pass is what we locate
        if entered:
            name, module, shape = entered[-1]
            return name, module, shape, (str(e).strip().splitlines() or [type(e).__name__])[0]
        return "model", model, list(x.shape), str(e)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return None


def explain(cfg, model: nn.Module, loader, exc: BaseException) -> BaseException:
    """A ShapeError for `exc` when two samples of `loader` (the training data, as a batch is made, unaugmented)
    pushed through `model` fail the same way; `exc` itself otherwise."""
    if not isinstance(exc, RuntimeError) or isinstance(exc, ShapeError):
        return exc
    try:
        x = loader.normalize(loader.x[:2].to(loader.device).float().div_(255))
        found = failing_layer(model, x)
    except Exception:  # noqa: BLE001 - explaining must never hide the original error
        return exc
    if found is None:
        return exc
    name, module, shape, reason = found
    keys = "".join(f", model.{k}={v}" for k, v in cfg.model.items() if k not in ("_target_", "init_from",
                                                                                "freeze_backbone"))
    # Short enough for the console's one line (errors.one_line): the layer, the shape, the keys
    return ShapeError(f"layer {name} ({type(module).__name__}) got a tensor of shape {shape}: {reason}. Data "
                      f"samples: {list(loader.x.shape[1:])}; the model is built for data.in_shape="
                      f"{list(cfg.data.in_shape)}{keys}: check data.in_shape and model.*")


def explain_first_forward(trainer, exc: BaseException) -> BaseException:
    """`explain` for a run that failed before its first optimizer step (after set-up built the model)."""
    model, data = getattr(trainer, "model", None), getattr(trainer, "data", None)
    if trainer.state.step > 0 or model is None or data is None:
        return exc
    return explain(trainer.cfg, model, data.train, exc)
