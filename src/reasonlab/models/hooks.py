"""Hook points with TransformerLens-style names, and the two ways to use them.

A ``HookPoint`` is an identity module placed wherever an activation is worth reading or changing.
``HookedModule.run_with_cache`` records activations by name; ``run_with_hooks`` runs functions that
may replace them (activation patching). Hooks are removed when the call returns, even on error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

HookFn = Callable[[Tensor, "HookPoint"], Tensor | None]
NamesFilter = Callable[[str], bool] | Iterable[str] | str | None


class HookPoint(nn.Module):
    """Identity; its full name (e.g. ``blocks.0.hook_resid_post``) is set by HookedModule."""

    def __init__(self) -> None:
        super().__init__()
        self.name = ""

    @property
    def active(self) -> bool:
        return bool(self._forward_hooks)

    def forward(self, x: Tensor) -> Tensor:
        return x


def _as_predicate(names_filter: NamesFilter) -> Callable[[str], bool]:
    if names_filter is None:
        return lambda name: True
    if isinstance(names_filter, str):
        return lambda name: name == names_filter
    if callable(names_filter):
        return names_filter
    wanted = set(names_filter)
    return lambda name: name in wanted


class HookedModule(nn.Module):
    """Base of every model family: names its hook points and runs with cache or hooks."""

    def setup_hooks(self) -> None:
        """Call at the end of ``__init__``: gives every HookPoint its dotted name."""
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    def hook_names(self) -> list[str]:
        return list(self.hook_dict)

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str | Callable[[str], bool], HookFn]]) -> Iterator:
        handles = []
        try:
            for name, fn in fwd_hooks:
                matches = (
                    [name] if isinstance(name, str) else [n for n in self.hook_dict if name(n)]
                )
                for match in matches:
                    if match not in self.hook_dict:
                        raise KeyError(f"no hook point named {match!r}")
                    point = self.hook_dict[match]
                    handles.append(
                        point.register_forward_hook(
                            lambda module, args, output, fn=fn: fn(output, module)
                        )
                    )
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def run_with_hooks(
        self,
        inputs: Tensor,
        fwd_hooks: Iterable[tuple[str | Callable[[str], bool], HookFn]] = (),
        **kwargs: Any,
    ) -> Tensor:
        """Forward pass with ``fwd_hooks`` = [(name or predicate, fn(activation, hook))]; a hook
        that returns a tensor replaces the activation."""
        with self.hooks(fwd_hooks):
            return self(inputs, **kwargs)

    def run_with_cache(
        self,
        inputs: Tensor,
        names_filter: NamesFilter = None,
        detach: bool = True,
        **kwargs: Any,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward pass that also returns {hook name: activation} for the names selected."""
        keep = _as_predicate(names_filter)
        cache: dict[str, Tensor] = {}

        def save(activation: Tensor, hook: HookPoint) -> None:
            cache[hook.name] = activation.detach() if detach else activation

        names = [name for name in self.hook_dict if keep(name)]
        context = torch.no_grad() if detach else torch.enable_grad()
        with context:
            logits = self.run_with_hooks(inputs, [(name, save) for name in names], **kwargs)
        return logits, cache
