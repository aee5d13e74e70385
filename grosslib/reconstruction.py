"""Response reconstruction, eq. 9: ``loss = sum_l ||A'_l - A_l||_F / ||A_l||_F`` over the decomposed layers.

``A_l`` is the response (output) of the original network's conv ``l`` on a batch and ``A'_l`` the
response of the decomposed layer that replaced it, on the same batch. Two readings of where ``A'_l``
comes from (:func:`reconstruction_loss`):

* ``"end_to_end"`` (default, the natural reading of the paper): from the decomposed network's own
  input to layer ``l``, so the errors of earlier decomposed layers are seen and compensated;
* ``"layerwise"``: from the original network's input to its conv ``l``, so each layer is fitted alone.

Example (a network compared with itself has zero loss)::

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    >>> x = torch.randn(2, 3, 8, 8)
    >>> float(reconstruction_loss(net, [net[0], net[2]], net, [net[0], net[2]], x).detach())
    0.0
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["RECONSTRUCTION_MODES", "capture", "reconstruction_loss", "relative_response_error"]

RECONSTRUCTION_MODES: tuple[str, ...] = ("end_to_end", "layerwise")


@contextlib.contextmanager
def capture(modules: Sequence[nn.Module], *, inputs: bool = False) -> Iterator[list[Tensor]]:
    """Record each module's output (a clone: an in-place ReLU after it would overwrite it) or first input.

    The yielded list is filled when the context exits, in the order of ``modules`` (whatever order
    the forward pass calls them in). Raises ``RuntimeError`` if a module never ran.
    """
    store: dict[int, Tensor] = {}
    recorded: list[Tensor] = []

    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        store[id(module)] = args[0] if inputs else output.clone()

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()
    missing = [m for m in modules if id(m) not in store]
    if missing:
        raise RuntimeError(f"{len(missing)} module(s) never ran in the forward pass: {missing[:2]}")
    recorded.extend(store[id(m)] for m in modules)


def relative_response_error(outputs: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
    """Eq. 9: ``sum_l ||A'_l - A_l||_F / ||A_l||_F`` (norms over the whole batch)."""
    return sum(torch.linalg.vector_norm(a_hat - a) / torch.linalg.vector_norm(a)
               for a_hat, a in zip(outputs, targets))  # type: ignore[return-value]


def reconstruction_loss(net: nn.Module, layers: Sequence[nn.Module], original: nn.Module,
                        targets: Sequence[nn.Module], x: Tensor, mode: str = "end_to_end") -> Tensor:
    """Eq. 9 on batch ``x``: ``layers`` of ``net`` against the ``targets`` (their convs) of ``original``.

    The original network runs without gradient; ``mode`` is ``"end_to_end"`` or ``"layerwise"`` (see
    the module docstring).
    """
    if mode not in RECONSTRUCTION_MODES:
        raise ValueError(f"mode must be one of {RECONSTRUCTION_MODES}, got {mode!r}")
    layerwise = mode == "layerwise"
    with torch.no_grad(), capture(targets) as responses, \
            capture(targets if layerwise else [], inputs=True) as inputs:
        original(x)
    if layerwise:
        outputs = [layer(inp) for layer, inp in zip(layers, inputs)]
    else:
        with capture(layers) as outputs:
            net(x)
    return relative_response_error(outputs, responses)
