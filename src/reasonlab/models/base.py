"""The interface every model family offers to the code beyond ``models/``.

Evaluation, analysis, export and reports use only these methods and the hook names they return,
never an attribute of one family, so that the GPT and Mamba are opened up the same way:

- ``residual_names()``: the residual stream after the embeddings and after every block, in order;
- ``read_out(residual)``: logits a residual would give if it were the last block's output (the
  final norm, then the unembedding): the logit lens;
- ``component_hooks()``: per-layer hook names of each component kind the family has, e.g.
  ``{"attn_out": [...], "mlp_out": [...]}`` for the GPT and ``{"mixer_out": [...]}`` for Mamba;
- ``new_state(batch_size)`` and ``forward(inputs, state=state)``: incremental decoding. With a
  state, ``inputs`` continue the sequence the state has seen, the state is updated in place, and
  the logits of the new positions come back; feeding a sequence in pieces gives the logits of
  feeding it whole (up to float rounding);
- ``describe()``: one line for reports ("4 layers, width 128, 4 heads, learned positions").
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from reasonlab.models.hooks import HookedModule


class DecodingState:
    """What a family keeps between decoding steps; ``length`` counts the positions fed so far."""

    length: int = 0


class LanguageModel(HookedModule):
    """Base class of every model family (see the module docstring)."""

    family: ClassVar[str] = ""
    cfg: Any

    def residual_names(self) -> list[str]:
        """The residual stream after the embeddings and after every block, in order."""
        return ["blocks.0.hook_resid_pre"] + [
            f"blocks.{i}.hook_resid_post" for i in range(self.cfg.n_layers)
        ]

    def read_out(self, residual: Tensor) -> Tensor:
        """Every family here names its final norm ``ln_final`` and its unembedding ``unembed``."""
        return self.unembed(self.ln_final(residual))

    def component_hooks(self) -> dict[str, list[str]]:
        raise NotImplementedError

    def new_state(self, batch_size: int) -> DecodingState:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def strip_prefix(tensors: dict[str, Tensor], prefix: str = "model.") -> dict[str, Tensor]:
    """The tensors whose names start with ``prefix``, without it (a checkpoint's model weights)."""
    return {
        name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)
    }
