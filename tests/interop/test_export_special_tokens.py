"""An hf export names the task's own special tokens, so that transformers' ``generate`` stops where
the task's answer ends (``<eos>`` for COPY, ``</a>`` for two-hop), and its vocabulary file does not
collide with the file names Hugging Face tokenizers read.

reasonlab only trains and exports here; what is checked after the export uses transformers and the
exported folder alone (``check_export``), as a user of the checkpoint would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import EXPORT_TWOHOP_TASK, exit_code
from reasonlab.config import config_from_dict
from reasonlab.training.loop import train

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TRAIN = {"steps": 40, "batch_size": 32, "warmup_steps": 2, "lr": 3e-3, "device": "cpu"}
# Trained long enough to write the end token where the task puts it (the answers themselves are
# mostly wrong): a Mamba on COPY of 2-3 symbols, a GPT on two-hop with CoT (h r1 r2 b t </a>)
# whose position table is longer than a row, so that generation can run past the answer.
RUNS: dict[str, dict[str, Any]] = {
    "copy-mamba": {
        "task": {
            "kind": "copy",
            "vocab_size": 4,
            "min_length": 2,
            "max_length": 3,
            "test_lengths": [3],
            "num_train": 500,
            "num_test": 16,
        },
        "model": {"kind": "mamba", "n_layers": 1, "d_model": 32, "d_state": 4},
    },
    "twohop-gpt": {
        "task": EXPORT_TWOHOP_TASK,
        "model": {"n_layers": 1, "d_model": 32, "n_heads": 2, "max_seq_len": 16},
    },
}
# Prompts as token names; the expected end token of each task.
PROMPTS = {
    "copy-mamba": [["a", "b", "<sep>"], ["c", "a", "d", "<sep>"], ["d", "d", "b", "<sep>"]],
    "twohop-gpt": [[f"<e_{e}>", f"<r_{r}>", f"<r_{s}>"] for e, r, s in [(1, 0, 1), (7, 2, 4)]],
}
END = {"copy-mamba": "<eos>", "twohop-gpt": "</a>"}
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-tokens")
    folders = {}
    for name, run in RUNS.items():
        config = {**run, "train": TRAIN, "eval": {"every": 40}, "log": {"progress": False}}
        train(config_from_dict(config), root / name)
        assert exit_code("export", root / name, "--format", "hf", root / f"{name}-hf") == 0
        folders[name] = root / f"{name}-hf"
    return folders


def check_export(folder: Path, prompts: list[list[str]]) -> dict[str, Any]:
    """What a user with transformers alone sees: the config's special tokens (as names) and, for
    each prompt, greedy generation as configured and with no end token."""
    vocab = json.loads((folder / "reasonlab_vocab.json").read_text())
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    outputs = []
    for prompt in prompts:
        ids = torch.tensor([[vocab.index(token) for token in prompt]])
        kwargs = {"max_new_tokens": NEW_TOKENS, "do_sample": False}
        stopped = model.generate(ids, **kwargs)[0, len(prompt) :].tolist()
        unstopped = model.generate(ids, eos_token_id=None, **kwargs)[0, len(prompt) :].tolist()
        outputs.append(([vocab[i] for i in stopped], [vocab[i] for i in unstopped]))
    config = model.config

    def name(token_id: int | None) -> str | None:
        return None if token_id is None else vocab[token_id]

    return {
        "eos": name(config.eos_token_id),
        "pad": name(config.pad_token_id),
        "bos": name(config.bos_token_id),
        "outputs": outputs,
    }


@pytest.mark.parametrize("name", list(RUNS))
def test_generate_stops_at_the_tasks_end_token(exports: dict[str, Path], name: str) -> None:
    seen = check_export(exports[name], PROMPTS[name])
    end = END[name]
    assert (seen["eos"], seen["pad"], seen["bos"]) == (end, "<pad>", None)
    stops = 0
    for stopped, unstopped in seen["outputs"]:
        if end in unstopped[:-1]:
            # the model writes the end token and more after it: generate stops right there
            assert stopped == unstopped[: unstopped.index(end) + 1]
            stops += 1
        else:
            assert stopped == unstopped
    assert stops, f"no prompt made the {name} model write {end}: the check proves nothing"


def test_vocabulary_file_is_not_read_as_a_tokenizer(exports: dict[str, Path]) -> None:
    for folder in exports.values():
        assert not (folder / "vocab.json").exists()
        record = json.loads((folder / "reasonlab_export.json").read_text())
        vocab = json.loads((folder / record["vocab"]).read_text())
        assert record["eos_token_id"] == vocab.index(END[folder.name.removesuffix("-hf")])
        # the exported tokenizer loads (our file is not taken for a GPT-2 vocabulary) and names
        # the same end token
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        assert tokenizer.eos_token_id == record["eos_token_id"]
