"""The one walk that replaces a model's `nn.Linear` layers with a fast path's layers, once at load time.

The CPU fast paths (fp32 prepacked or MKL layers and bf16 layers in models/fastpath.py, int8 layers in
models/quantize.py) each say how to build their layer from an `nn.Linear`; `swap_linears` walks the tree and
puts it in place. A feed-forward block declares that its `act` applies to one child's output (`act_input`, as in
`gelu(dense(x))`); a new layer that applies that activation itself (fused into its last pass) says so, and the
block's `act` then becomes `identity`, so that `act(dense(x))` still computes the activation once.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from coulisse.models.bert import ACTIVATIONS

# The activations a fast-path layer can apply itself, by the function object `act` holds (transformers' other names
# of them are the same objects): our name, as models/fastpath.py's oneDNN post-ops read it ("gelu" is erf's).
_FUSABLE = {id(ACTIVATIONS["gelu"]): "gelu", id(ACTIVATIONS["gelu_new"]): "gelu_tanh",
            id(ACTIVATIONS["gelu_pytorch_tanh"]): "gelu_tanh", id(ACTIVATIONS["relu"]): "relu"}


def activation_after(module: nn.Module, child_name: str) -> str | None:
    """The name of the activation `module` applies to child `child_name`'s output ("gelu", "gelu_tanh" or "relu"),
    where a layer can apply it itself: a feed-forward `act(dense(x))` declares it with `act_input`. None otherwise."""
    if getattr(module, "act_input", None) != child_name:
        return None
    return _FUSABLE.get(id(module.act))


def identity(x: Tensor) -> Tensor:
    """A feed-forward's `act` once its linear layer applies the activation itself."""
    return x


def swap_linears(module: nn.Module, make_layer: Callable[[nn.Linear, str, str | None], tuple[nn.Module, bool] | None],
                 prefix: str = "") -> int:
    """Replace every `nn.Linear` under `module` with `make_layer(linear, path, activation)`; return how many.

    `path` is the linear's name under `module` ("layer.0.intermediate.dense"); `activation` is what its parent
    applies to its output (`activation_after`). `make_layer` returns `(layer, fused)`, `fused` when the layer
    applies that activation itself (the parent's `act` then becomes `identity`), or None to leave the linear."""
    count = 0
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if not isinstance(child, nn.Linear):
            count += swap_linears(child, make_layer, f"{path}.")
            continue
        made = make_layer(child, path, activation_after(module, name))
        if made is None:
            continue
        layer, fused = made
        setattr(module, name, layer)
        if fused:
            module.act = identity
        count += 1
    return count
