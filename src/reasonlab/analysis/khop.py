"""k-hop questions answered by chained CoT queries, as the CoT paper answers them (arXiv
2502.04667): h -r1-> ... -rk-> t is asked as a two-hop query (h, r1, r2) in the run's own
pattern, whose generated tail e2 starts the next query (e2, r3, r4), and so on; an odd last hop is
an atomic query (e, r). Every query has the shape of a training sequence, so no position the
model never trained on is read, unlike the direct k-hop probe (``test_inferred_<k>hop_*``), whose
sequences are longer than any training sequence.

``chained_answers`` returns the final entity and the entity after each query; ``chained_scores``
compares them with the chain's own bridges and tail, on the same chains as the direct probe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reasonlab.tasks.twohop.encoding import Vocabulary, chains_to_probe, encode
from reasonlab.tasks.twohop.graph import Chains
from reasonlab.training.evaluation import greedy_complete

HOPS_PER_QUERY = 2  # the trained two-hop query; a last single hop is an atomic query


def query_plan(hops: int) -> list[int]:
    """Relations per query: twos, and a one at the end for an odd count (3 -> [2, 1])."""
    return [HOPS_PER_QUERY] * (hops // HOPS_PER_QUERY) + [1] * (hops % HOPS_PER_QUERY)


@torch.no_grad()
def chained_answers(
    model: nn.Module, chains: Chains, cot: str, vocab: Vocabulary, batch_size: int = 1024
) -> list[np.ndarray]:
    """The entity the model names after each query of the chain's plan (the last one is its
    answer), each (n,) token ids; the model's own answer starts the next query."""
    model.eval()
    entity = chains.heads.copy()
    after_each, used = [], 0
    for take in query_plan(chains.hops):
        relations = chains.relations[:, used : used + take]
        query = Chains(
            entity,
            relations,
            np.zeros((len(entity), take - 1), np.int64),  # generated, never read
            np.zeros(len(entity), np.int64),
        )
        tokens, plan = encode(query, cot, vocab)
        given = torch.zeros(tokens.shape, dtype=torch.bool)
        given[:, sorted(plan.given)] = True
        tail_position = len(plan.slots) - 1
        answers = []
        for start in range(0, len(entity), batch_size):
            rows = slice(start, start + batch_size)
            completed = greedy_complete(
                model, torch.from_numpy(tokens[rows]), plan.prompt_len, given[rows]
            )
            answers.append(completed[:, tail_position].numpy())
        entity = np.concatenate(answers)
        after_each.append(entity)
        used += take
    return after_each


def chained_scores(
    model: nn.Module, chains: Chains, cot: str, vocab: Vocabulary, batch_size: int = 1024
) -> dict[str, Any]:
    """Accuracy of the chained answer (the tail), and of the entity after each query against the
    chain's true entity at that hop."""
    after_each = chained_answers(model, chains, cot, vocab, batch_size)
    truth, used, per_query = [], 0, []
    for take in query_plan(chains.hops):
        used += take
        truth.append(chains.tails if used == chains.hops else chains.bridges[:, used - 1])
    for predicted, expected in zip(after_each, truth, strict=True):
        per_query.append(float((predicted == expected).mean()))
    return {
        "accuracy": per_query[-1],
        "after_each_query": per_query,
        "queries": query_plan(chains.hops),
        "chains": len(chains),
    }


def run_khop(run_dir: str | Path, checkpoint: str = "last") -> dict[str, Any]:
    """Chained and direct accuracy on every k-hop probe of a two-hop run (its last checkpoint or
    a step), on the same chains as the direct probe."""
    from reasonlab.analysis.run_folder import select_steps
    from reasonlab.config import ConfigError
    from reasonlab.runs.folder import RunDir
    from reasonlab.tasks.twohop.generator import build_splits, probe_chains
    from reasonlab.training.evaluation import evaluate
    from reasonlab.training.loaded_run import run_precision
    from reasonlab.training.precision import autocast_context

    run = RunDir(run_dir)
    config = run.load_config()
    if config.task.kind != "twohop" or config.task.data_dir is not None:
        raise ConfigError(
            f"task.kind: chained k-hop answers need a generated twohop task ({run.path})"
        )
    splits = build_splits(config.task)
    vocab = Vocabulary(config.task.num_entities, config.task.num_relations)
    chains = {name: c for name, c in probe_chains(splits, config.task).items() if c.hops > 2}
    with run.lock():
        step = select_steps(run, checkpoint)[0]
        model = run.load_model(step, config)
        bf16 = run_precision(run, config) == "bf16"  # scored as the run scored its probes
        probes = {n: chains_to_probe(c, config.task.cot, vocab) for n, c in chains.items()}
        direct = evaluate(model, probes, autocast=bf16)
        result: dict[str, Any] = {"run": str(run.path), "step": step, "cot": config.task.cot}
        with autocast_context(torch.device("cpu"), bf16):
            result["probes"] = {
                name: {"direct": direct[name], **chained_scores(model, c, config.task.cot, vocab)}
                for name, c in chains.items()
            }
    return result
