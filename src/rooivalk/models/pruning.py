"""Pruning of a trained model (`training.pruning`): magnitude (unstructured) or channels (structured).

The engine's pruning phase (rooivalk.training.engine.phases) calls `prune`, fine-tunes the model as it
is left, then `make_permanent` on the best epoch's weights.

- magnitude: the `amount` share of all Conv1d, Conv2d and Linear weights with the smallest |w|, ranked
  over those layers together (global L1, as torch.nn.utils.prune.global_unstructured ranks), is set to zero.
  Tensors keep their shapes. While the engine fine-tunes, each layer holds `weight_orig` (trained) and
  a 0/1 `weight_mask` buffer, and a forward pre-hook computes weight = weight_orig * weight_mask, so
  the zeros stay zero and the state dict (checkpoints, best-epoch copies, EMA) carries both. Linear
  layers inside nn.MultiheadAttention stay dense: attention reads out_proj.weight directly
  (F.multi_head_attention_forward), never through the layer's forward, so the hook would never
  refresh it. Recurrent (GRU/LSTM) weights are not Conv/Linear layers and stay dense too.
  `make_permanent` folds each mask into its weight (prune.remove): the usual `weight` keys come back.
- channels: whole output channels are removed with torch-pruning (MetaPruner, L2 magnitude importance
  per channel group, `amount` of each group's channels), so layers get smaller and the model faster.
  The classifier's output layer is never pruned (the class count stays). torch-pruning couples the
  layers that share channels (a conv, its BatchNorm, the next conv's inputs, residual sums) into
  groups; a group is removed only where removing it is exact: on a copy of the model, the group's
  channels are first zeroed at their source (conv/linear rows, BatchNorm shift), then removed, and the
  copy's output must not change. Groups that touch layers whose channels cannot be zeroed this way
  (attention, LayerNorm, recurrent cells, loose parameters such as a position embedding) or whose
  channel index mapping torch-pruning gets wrong (a permute before a reshape) are left whole and
  counted in the `skipped_groups` metric. A model with no removable group is refused.
  A channel-pruned model no longer matches what its family builds from the plan, so `pruned_structure`
  gives the changed layers' sizes, which every model artifact records and `restore_structure` applies
  to a freshly built model before its state dict loads.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

Method = Literal["magnitude", "channels"]
Forward = Callable[[nn.Module, Any], torch.Tensor]  # (model, example inputs) -> logits, as the task runs it
# {module name: {"attributes": {name: int or list of ints}, "shapes": {parameter or buffer: shape}}}
Structure = dict[str, dict[str, Any]]

PRUNED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
# Layers whose output channels can be zeroed (channel removal is then checked to be exact).
ZEROABLE = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
STRUCTURE_ATTR = "rooivalk_pruned_structure"  # set on a channel-pruned model: what its artifact records
_CHANNEL_STATS = "_rooivalk_channel_stats"
_ORDER = "_rooivalk_parameter_order"


def _call(model: nn.Module, inputs: Any) -> torch.Tensor:
    return model(inputs)  # type: ignore[no-any-return]


def prune(model: nn.Module, method: Method, amount: float, example_inputs: Any, forward: Forward | None = None) -> None:
    """Prune `model` in place by `method`, `amount` (0..1) of its weights or channels. `example_inputs`: one
    batch as `forward(model, inputs)` takes it (default: `model(inputs)`); channel pruning traces it."""
    if not 0 < amount < 1:
        raise ValueError(f"amount: {amount} is not in (0, 1)")
    if is_pruned(model):
        raise ValueError("the model is pruned already (prune it once, then make_permanent)")
    if method == "magnitude":
        _prune_magnitude(model, amount)
    elif method == "channels":
        _prune_channels(model, amount, example_inputs, forward or _call)
    else:
        raise ValueError(f"method: {method!r} is not magnitude or channels")


def is_pruned(model: nn.Module) -> bool:
    """Whether `prune` left its change in `model` and `make_permanent` has not run yet."""
    return hasattr(model, _CHANNEL_STATS) or bool(_masked_layers(model))


def make_permanent(model: nn.Module) -> dict[str, float]:
    """Make the pruning permanent (in place) and return its metrics: magnitude folds the masks into the
    weights (sparsity: share of zero weights over the pruned layers); channels reports the parameter
    count against the one before pruning and the channel groups removed and left whole."""
    masked = _masked_layers(model)
    if masked:
        zeros = total = 0
        for layer in masked:
            torch_prune.remove(layer, "weight")  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            # prune registers weight_orig, and remove the weight, after the bias; keep the state dict's order
            order = getattr(layer, _ORDER)
            layer._parameters = {name: layer._parameters[name] for name in order}
            delattr(layer, _ORDER)
            weight = layer.get_parameter("weight")
            zeros, total = zeros + int((weight == 0).sum()), total + weight.numel()
        return {"sparsity": zeros / total, "parameters": float(parameter_count(model)), "layers": float(len(masked))}
    stats = getattr(model, _CHANNEL_STATS, None)
    if stats is None:
        raise ValueError("the model is not pruned: nothing to make permanent")
    delattr(model, _CHANNEL_STATS)
    parameters = parameter_count(model)
    return {
        "parameters": float(parameters),
        "parameter_ratio": parameters / stats["parameters"],
        "groups": float(stats["groups"]),
        "skipped_groups": float(stats["skipped_groups"]),
    }


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- magnitude ------------------------------------------------------------------------------------


def magnitude_layers(model: nn.Module) -> list[nn.Module]:
    """The layers magnitude pruning masks: every Conv1d, Conv2d and Linear outside attention modules."""
    inside_attention = {
        id(sub) for module in model.modules() if isinstance(module, nn.MultiheadAttention) for sub in module.modules()
    }
    return [m for m in model.modules() if isinstance(m, PRUNED_LAYERS) and id(m) not in inside_attention]


def _masked_layers(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if hasattr(module, "weight_mask")]


def _prune_magnitude(model: nn.Module, amount: float) -> None:
    layers = magnitude_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no conv or linear layer to prune")
    # The global L1 ranking of prune.global_unstructured, which views each weight as a flat vector and so
    # fails on channels_last weights (the image task's memory format): the same smallest-|w| selection,
    # over the weights in their logical order, then each layer's share as its mask.
    weights = [layer.get_parameter("weight").detach() for layer in layers]
    magnitudes = torch.cat([weight.abs().reshape(-1) for weight in weights])  # (all weights,)
    keep = torch.ones_like(magnitudes)
    keep[torch.topk(magnitudes, round(amount * magnitudes.numel()), largest=False).indices] = 0
    masks = torch.split(keep, [weight.numel() for weight in weights])
    for layer, mask in zip(layers, masks, strict=True):
        setattr(layer, _ORDER, list(layer._parameters))
        shape = layer.get_parameter("weight").shape
        torch_prune.custom_from_mask(layer, "weight", mask.reshape(shape))  # type: ignore[no-untyped-call]
    # prune leaves `weight` as weight_orig * mask computed with autograd: a non-leaf tensor, which
    # copy.deepcopy refuses (the EMA's AveragedModel copies the model). The hook recomputes it at every
    # forward, so the value computed here without autograd is only what a copy starts from.
    with torch.no_grad():
        for layer in layers:
            setattr(layer, "weight", layer.get_parameter("weight_orig") * layer.get_buffer("weight_mask"))  # noqa: B010


# -- channels -------------------------------------------------------------------------------------


def output_layer(model: nn.Module) -> nn.Module:
    """The layer that computes the class logits: the last conv or linear layer of the classifier."""
    get_classifier = getattr(model, "get_classifier", None)
    classifier = get_classifier() if callable(get_classifier) else None
    candidates = [m for m in (classifier or model).modules() if isinstance(m, PRUNED_LAYERS)]
    if not candidates:
        raise ValueError(f"{type(model).__name__}: no conv or linear classifier layer found")
    return candidates[-1]


def _prune_channels(model: nn.Module, amount: float, inputs: Any, forward: Forward) -> None:
    import torch_pruning as tp  # loaded only where a plan prunes channels

    was_training = model.training
    model.eval()  # tracing runs a forward pass: BatchNorm statistics must not move
    before, parameters = _sizes(model), parameter_count(model)
    with warnings.catch_warnings():
        # Loose parameters (position embeddings, state-space parameters): their groups are skipped below.
        warnings.filterwarnings("ignore", message="Unwrapped parameters")
        importance = _GuardedImportance(tp.importance.MagnitudeImportance(p=2))
        try:
            pruner = tp.pruner.MetaPruner(
                model,
                inputs,
                importance=importance,
                pruning_ratio=amount,
                ignored_layers=[output_layer(model)],
                root_module_types=[tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR],
                forward_fn=forward,
            )
        except (IndexError, TypeError) as error:  # its tracing fails on GRU/LSTM layers, for one
            model.train(was_training)
            raise ValueError(
                f"channel pruning: torch-pruning cannot trace {type(model).__name__}'s channels "
                f"({type(error).__name__}: {error}); use method magnitude"
            ) from error
        pruned, skipped = 0, 0
        for group in pruner.step(interactive=True):
            if _removal_is_exact(model, pruner.DG, group, inputs, forward):
                group.prune()
                pruned += 1
            else:
                skipped += 1
    model.train(was_training)
    skipped += importance.failed
    if pruned == 0:
        raise ValueError(
            f"channel pruning: none of the {skipped} channel groups of {type(model).__name__} can be removed "
            "exactly (attention, LayerNorm, recurrent layers or loose parameters in each); use method magnitude"
        )
    setattr(model, STRUCTURE_ATTR, _changed(before, _sizes(model)))
    setattr(model, _CHANNEL_STATS, {"parameters": parameters, "groups": pruned, "skipped_groups": skipped})


class _GuardedImportance:
    """torch-pruning's importance, where a group whose channel index mapping torch-pruning cannot follow
    (it raises IndexError on some concatenations of reshaped maps) is left whole instead of failing."""

    def __init__(self, importance: Any) -> None:
        self.importance, self.failed = importance, 0

    def __call__(self, group: Any) -> torch.Tensor | None:
        try:
            return self.importance(group)  # type: ignore[no-any-return]
        except IndexError:
            self.failed += 1
            return None  # MetaPruner skips a group without importance


def _removal_is_exact(model: nn.Module, graph: Any, group: Any, inputs: Any, forward: Forward) -> bool:
    """Whether removing the group's channels leaves the model's output as it is once those channels are
    zeroed at their source: tried on a copy (eval mode), so a wrong index mapping is caught, not kept."""
    import torch_pruning as tp

    names = {module: name for name, module in model.named_modules()}
    trial = copy.deepcopy(model)
    steps = []
    for dep, idxs in group:
        target = dep.target
        if target.type == tp.ops.OPTYPE.PARAMETER:
            return False  # a loose parameter: which of its dimensions is the channel is unknown
        if target.module not in names:
            continue  # an operation of the traced graph (add, concat, reshape): nothing to prune in it
        if not isinstance(target.module, ZEROABLE):
            return False
        module = trial.get_submodule(names[target.module])
        steps.append((module, dep, tp._helpers.to_plain_idxs(idxs)))
    with torch.no_grad():
        for module, dep, idxs in steps:
            if graph.is_out_channel_pruning_fn(dep.handler):
                _zero_output_channels(module, idxs)
        expected = forward(trial, inputs)
        for module, dep, idxs in steps:
            dep.handler.__self__.pruning_dim = dep.target.pruning_dim
            dep.handler(module, idxs)
        try:
            actual = forward(trial, inputs)
        except RuntimeError:  # shapes that no longer fit: the group's index mapping is wrong
            return False
    scale = float(expected.abs().max()) + 1.0
    return actual.shape == expected.shape and bool(torch.allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale))


def _zero_output_channels(module: nn.Module, idxs: list[int]) -> None:
    """Make output channels `idxs` of a conv, linear or BatchNorm layer exactly 0 (eval mode)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):  # (0 - mean) / std * gamma + beta = 0
        if module.running_mean is not None:
            module.running_mean[idxs] = 0
        if module.bias is not None:
            module.bias[idxs] = 0
        return
    module.get_parameter("weight")[idxs] = 0  # (out, ...): rows are output channels
    if getattr(module, "bias", None) is not None:
        module.get_parameter("bias")[idxs] = 0


# -- the pruned structure in artifacts -------------------------------------------------------------


def _sizes(model: nn.Module) -> Structure:
    """Every module's integer attributes (channel counts, groups) and its own tensors' shapes."""
    sizes: Structure = {}
    for name, module in model.named_modules():
        attributes = {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in vars(module).items()
            if not key.startswith("_") and _is_size(value)
        }
        tensors = {**module._parameters, **module._buffers}
        shapes = {key: list(tensor.shape) for key, tensor in tensors.items() if tensor is not None}
        sizes[name] = {"attributes": attributes, "shapes": shapes}
    return sizes


def _is_size(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(isinstance(item, int) and not isinstance(item, bool) for item in value)
    return isinstance(value, int) and not isinstance(value, bool)


def _changed(before: Structure, after: Structure) -> Structure:
    """The modules whose tensor shapes changed, with the attributes and shapes that changed."""
    changed: Structure = {}
    for name, sizes in after.items():
        old = before.get(name, {"attributes": {}, "shapes": {}})
        shapes = {k: v for k, v in sizes["shapes"].items() if old["shapes"].get(k) != v}
        if shapes:
            attributes = {k: v for k, v in sizes["attributes"].items() if old["attributes"].get(k) != v}
            changed[name] = {"attributes": attributes, "shapes": shapes}
    return changed


def pruned_structure(model: nn.Module) -> Structure | None:
    """The layer sizes channel pruning changed (what a model artifact records), or None for a model of
    its family's own sizes."""
    structure = getattr(model, STRUCTURE_ATTR, None)
    return structure if structure else None


def restore_structure(model: nn.Module, structure: Structure) -> None:
    """Resize a freshly built model's layers to a channel-pruned model's (`pruned_structure`), in place;
    the tensors are placeholders until the pruned model's state dict loads."""
    for name, sizes in structure.items():
        module = model.get_submodule(name)
        for key, value in sizes["attributes"].items():
            setattr(module, key, tuple(value) if isinstance(getattr(module, key, None), tuple) else value)
        for key, shape in sizes["shapes"].items():
            old = getattr(module, key)
            placeholder = torch.zeros(shape, dtype=old.dtype, device=old.device)
            if key in module._parameters:
                module._parameters[key] = nn.Parameter(placeholder, requires_grad=old.requires_grad)
            else:
                module._buffers[key] = placeholder
    setattr(model, STRUCTURE_ATTR, structure)
