"""Greedy decoding of an exported model on an exported dataset with transformers and datasets
alone, as a user without reasonlab would run it (test_hf_tokenizer.py runs it in a subprocess).

    python hf_only_decode.py JOBS

JOBS is a JSON object: name -> {"model": MODEL_DIR, "data": DATA_DIR, "loader": "load_dataset"
or "load_from_disk", "probes": [PROBE, ...]}. Prints one JSON object: name -> probe ->
{"correct": n, "rows": n}. A row is correct when the model,
fed the row's prompt, generates exactly the rest of the row (its completion and end token).
The prompt is ``input_text`` where the dataset has it (two-hop), else the ``text`` up to and
including its first ``<sep>`` (COPY, dynamic programs with the trace or the answer after it).
Every row's text must also decode back from its ids unchanged.
"""

from __future__ import annotations

import json
import sys

import datasets
import torch
import transformers


def prompt_and_full(row: dict) -> tuple[str, str]:
    if "input_text" in row:
        return row["input_text"], row["target_text"]
    text = row["text"]
    return text[: text.index("<sep>") + len("<sep>")], text


def accuracy(model_dir: str, data_dir: str, loader: str, probes: list[str]) -> dict:
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (
        model.config.pad_token_id,
        model.config.eos_token_id,
    ), "the tokenizer's special tokens are not the model's"
    data = getattr(datasets, loader)(data_dir)
    results = {}
    for probe in probes:
        groups: dict[tuple[int, int], list[tuple[list[int], list[int]]]] = {}
        for row in data[probe]:
            prompt, full = prompt_and_full(row)
            prompt_ids = tokenizer(prompt)["input_ids"]
            full_ids = tokenizer(full)["input_ids"]
            assert tokenizer.decode(full_ids) == full, (full, tokenizer.decode(full_ids))
            assert full_ids[: len(prompt_ids)] == prompt_ids, (prompt, full)
            target = full_ids[len(prompt_ids) :]
            groups.setdefault((len(prompt_ids), len(target)), []).append((prompt_ids, target))
        correct = 0
        for (prompt_len, target_len), rows in groups.items():
            inputs = torch.tensor([prompt for prompt, _ in rows])
            with torch.no_grad():
                out = model.generate(
                    inputs,
                    attention_mask=torch.ones_like(inputs),
                    max_new_tokens=target_len,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            for generated, (_, target) in zip(out[:, prompt_len:].tolist(), rows, strict=True):
                correct += generated == target
        results[probe] = {"correct": correct, "rows": len(data[probe])}
    return results


def main() -> None:
    jobs = json.loads(sys.argv[1])
    results = {
        name: accuracy(job["model"], job["data"], job["loader"], job["probes"])
        for name, job in jobs.items()
    }
    assert not any(name.split(".")[0] == "reasonlab" for name in sys.modules), "reasonlab imported"
    print(json.dumps(results))


if __name__ == "__main__":
    main()
