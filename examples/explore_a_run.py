# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exploring a trained run
#
# This notebook trains a small two-hop GPT from scratch (a few seconds on a CPU), then opens it
# up with reasonlab's analysis functions:
#
# 1. `run_with_cache`: every activation of a forward pass, by its hook name;
# 2. the **logit lens**: where in the network the answer becomes readable;
# 3. **activation patching**: which layer and position carry the bridge entity;
# 4. the **decay probe** on a Mamba trained on COPY;
# 5. the **dual-model check** on one attention head.
#
# The runs are tiny, so their numbers illustrate the tools, not the papers' claims: the
# studies (`reasonlab study --list`) run them at the sizes that decide the claims.
# `examples/explore_a_run.py` is the same notebook as a jupytext script; edit that and run
# `jupytext --sync examples/explore_a_run.py` (the test `tests/examples/test_notebook.py`
# checks the two agree and executes the notebook).

# %%
import copy
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from reasonlab.analysis.dual import dual_model_prediction, random_feature_attention
from reasonlab.analysis.dual_check import head_gaps, layer_inputs
from reasonlab.analysis.logit_lens import logit_lens
from reasonlab.analysis.patching import patch_grid
from reasonlab.analysis.runs import TwoHopRun
from reasonlab.analysis.ssm import run_decay
from reasonlab.analysis.twohop_queries import (
    counterfactual_chains,
    position_labels,
    query_tensors,
)
from reasonlab.config import config_from_dict
from reasonlab.training.loop import train

torch.manual_seed(0)
work = Path(tempfile.mkdtemp(prefix="explore-"))

# %% [markdown]
# ## 1. Train a small run
#
# Two-hop facts over a graph of 60 entities, with the chain of thought written after the
# relations (`h r1 r2 b t`: head, two relations, the bridge, the tail), a tenth of the ID
# two-hop chains held out as the ID test. A 2-layer GPT of width 32, 120 steps. `train`
# writes a run folder (config, metrics, checkpoint, summary) and returns its summary; a run
# folder trained before (by `reasonlab run` or a study) is opened the same way below.

# %%
config = config_from_dict(
    {
        "task": {
            "kind": "twohop",
            "num_entities": 60,
            "num_relations": 6,
            "out_degree": 3,
            "lam": 2.0,
            "ood_fraction": 0.1,
            "id_test_fraction": 0.1,
            "cot": "after_relations",
            "khop": [],
        },
        "model": {"kind": "gpt", "n_layers": 2, "d_model": 32, "n_heads": 2},
        "train": {"steps": 120, "batch_size": 64, "lr": 3e-3, "warmup_steps": 10},
        "eval": {"every": 120, "at_start": False},
        "log": {"progress": False, "checkpoints": "final"},
    }
)
summary = train(config, work / "twohop")
print({probe: round(value, 3) for probe, value in summary["final"].items() if "." not in probe})

# %% [markdown]
# `TwoHopRun` reopens the folder: the config, the graph rebuilt from it (and checked against
# the data the run trained on), every probe's chains and the vocabulary. `run.model(step)` is
# a checkpoint's model in eval mode, here the last one.

# %%
run = TwoHopRun(work / "twohop")
model = run.model(run.run.checkpoint_steps()[-1])
chains = run.queries("test_inferred_iid", n=40)
print(model.describe())
print(f"{len(chains)} ID two-hop queries; probes with a bridge: {run.probes()}")

# %% [markdown]
# ## 2. `run_with_cache` on a probe
#
# The queries as token ids up to the position that predicts the bridge (`r2`, the last
# relation: the next token the model writes is the bridge). `run_with_cache` returns the
# logits and every activation under its TransformerLens-style name; `names_filter` keeps a few.

# %%
tokens, bridge, read = query_tensors(chains, run.task.cot, run.vocab, "bridge")
labels = position_labels(run.task.cot, read)
logits, cache = model.run_with_cache(tokens)
print("positions:", labels, "| read at", labels[read])
for name in ["hook_embed", "blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post"]:
    print(f"{name:28s} {tuple(cache[name].shape)}")
predicted = logits[:, read].argmax(-1)
print(f"bridge predicted correctly for {(predicted == bridge).float().mean():.2f} of the queries")

# %%
pattern = cache["blocks.1.attn.hook_pattern"][:, 0].mean(0)  # (query, key), head 0, mean
fig, ax = plt.subplots(figsize=(3.2, 2.8))
ax.imshow(pattern, cmap="Blues", vmin=0, vmax=1)
ax.set_xticks(range(len(labels)), labels)
ax.set_yticks(range(len(labels)), labels)
ax.set_title("layer 1, head 0: mean attention")
ax.set_xlabel("key")
ax.set_ylabel("query")
plt.show()

# %% [markdown]
# ## 3. The logit lens
#
# Each layer's residual stream read through the final norm and the unembedding, as if it were
# the last layer: the mean reciprocal rank (MRR) of the bridge at every layer and position.
# Layer 0 is the embeddings, layer i the output of block i. An MRR of 1 at `r2` means the
# bridge is already the top token there.

# %%
lens = logit_lens(model, tokens, bridge)
mrr = lens.mrr().numpy()
fig, ax = plt.subplots(figsize=(4, 2.6))
image = ax.imshow(mrr, cmap="viridis", vmin=0, vmax=1, aspect="auto", origin="lower")
ax.set_xticks(range(len(labels)), labels)
ax.set_yticks(
    range(len(lens.layers)), ["embed", *(f"block {i}" for i in range(model.cfg.n_layers))]
)
ax.set_title("logit lens: MRR of the bridge")
fig.colorbar(image, ax=ax)
plt.show()

# %% [markdown]
# ## 4. Activation patching
#
# Counterfactual queries change the first relation `r1`, which changes the bridge. The
# residual stream of one layer at one position is copied from the counterfactual run into the
# clean run; where that flips the prediction away from the clean bridge, the layer and position
# carry the information that `r1` changed. Only the pairs whose clean query the model answers
# are kept; the grid is the share of them whose clean bridge is still the top token after each
# patch (1: the patch changed nothing).

# %%
clean, counterfactual = counterfactual_chains(
    run.splits.graph, run.task.num_relations, chains, "r1", "bridge", np.random.default_rng(0)
)
clean_tokens, clean_bridge, read = query_tensors(clean, run.task.cot, run.vocab, "bridge")
cf_tokens, cf_bridge, _ = query_tensors(counterfactual, run.task.cot, run.vocab, "bridge")
answered = model(clean_tokens)[:, read].argmax(-1) == clean_bridge
clean_tokens, clean_bridge = clean_tokens[answered], clean_bridge[answered]
cf_tokens, cf_bridge = cf_tokens[answered], cf_bridge[answered]
patched = patch_grid(model, clean_tokens, cf_tokens, clean_bridge, cf_bridge, read)
print(
    f"{len(clean_tokens)} pairs; clean top-1 {patched.clean_top1:.2f}, "
    f"counterfactual top-1 {patched.corrupt_top1:.2f}"
)

fig, ax = plt.subplots(figsize=(4, 2.6))
image = ax.imshow(patched.top1.numpy(), cmap="RdBu", vmin=0, vmax=1, aspect="auto", origin="lower")
ax.set_xticks(range(len(labels)), labels)
ax.set_yticks(
    range(len(patched.layers)), ["embed", *(f"block {i}" for i in range(model.cfg.n_layers))]
)
ax.set_title("patch resid from the r1 counterfactual:\nclean bridge still top-1")
fig.colorbar(image, ax=ax)
plt.show()

# %% [markdown]
# ## 5. The decay probe on a Mamba
#
# A one-layer Mamba trained on COPY (copy a string of up to 4 symbols after a separator). The
# decay probe reads its selective scan as linear attention with decay: for each copied token,
# how much of the source position's input survives the cumulative decay `alpha` by the time the
# copy is written, against the distance between the two. `run_decay` writes its JSON and plot
# into the run folder and returns the numbers, plotted here.

# %%
mamba_config = config_from_dict(
    {
        "task": {
            "kind": "copy",
            "vocab_size": 6,
            "max_length": 4,
            "test_lengths": [2, 3, 4],
            "num_train": 500,
            "num_test": 20,
        },
        "model": {"kind": "mamba", "n_layers": 1, "d_model": 16, "d_state": 4},
        "train": {"steps": 120, "batch_size": 32, "lr": 3e-3, "warmup_steps": 5},
        "eval": {"every": 120, "at_start": False},
        "log": {"progress": False, "checkpoints": "final"},
    }
)
copy_summary = train(mamba_config, work / "copy")
print(
    {probe: round(value, 3) for probe, value in copy_summary["final"].items() if "." not in probe}
)
decay = run_decay(work / "copy")
layer = decay["checkpoints"][-1]["layers"][0]

fig, ax = plt.subplots(figsize=(4.2, 2.8))
for key, label in [
    ("log10_alpha_max", "most persistent channel's decay"),
    ("log10_cb", "score c.b before decay"),
    ("log10_score", "best channel's weight"),
]:
    ax.plot(layer["distances"], layer[key], "o-", label=label)
ax.set_xlabel("distance i - j (copy to source)")
ax.set_ylabel("log10, median over pairs")
ax.legend(fontsize=7)
ax.set_title(f"decay probe, layer 0 (median per-step decay {layer['step_decay_median']:.3f})")
plt.show()

# %% [markdown]
# ## 6. The dual-model check on one head
#
# Softmax attention for one query equals, in the limit of many random features, one gradient
# step of a dual linear model (arXiv 2310.13220). On the two-hop GPT's layer 0, head 0 at the
# read position: the head's own (q, K, V), the dual model's prediction after one step equals
# random-feature attention to rounding for any number of features m, and random-feature
# attention approaches the softmax output as m grows (about like m^(-1/2) once m is large
# against the head's variance scale).

# %%
double = copy.deepcopy(model).double()
q, K, V = layer_inputs(double, tokens, layer=0, head=0, position=read)
omega = torch.randn(
    256, q.shape[-1], dtype=torch.float64, generator=torch.Generator().manual_seed(0)
)
gap = (dual_model_prediction(q, K, V, omega) - random_feature_attention(q, K, V, omega)).abs().max()
print(f"dual model vs random-feature attention, m = 256: max gap {gap:.1e}")

gaps = head_gaps(double, tokens[:4], layer=0, head=0, ms=(16, 64, 256, 1024, 4096), seeds=2)
print(
    f"softmax on (q, K, V) vs the head's output: {gaps['softmax_vs_layer']:.1e}; "
    f"log-log slope {gaps['slope']:.2f}; variance scale {gaps['variance_scale']:.2f}"
)
fig, ax = plt.subplots(figsize=(4, 2.8))
ax.loglog(gaps["ms"], gaps["rf_vs_softmax"], "o-", label="random features vs softmax")
ax.loglog(
    gaps["ms"],
    [gaps["rf_vs_softmax"][0] * (m / 16) ** -0.5 for m in gaps["ms"]],
    ":",
    color="grey",
    label="m^(-1/2)",
)
ax.set_xlabel("random features m")
ax.set_ylabel("relative error")
ax.legend(fontsize=7)
ax.set_title("layer 0, head 0")
plt.show()

# %% [markdown]
# ## Where next
#
# The same analyses from the command line, on any run folder: `reasonlab analyze logit-lens`,
# `trace`, `decay` and `dual` (docs/guide.md, "Opening a model up"); they write their JSON
# and plots under `RUN_DIR/analysis/`.
