"""The YAML a config is read from holds no silent surprises: a key given twice, a boolean where
a number belongs, an alias bomb and a ``--set section={...}`` that would reset the section are
each refused (exit 2, one line naming the key) or merged, never taken quietly."""

from __future__ import annotations

import pytest
import yaml

from helpers import TINY_RUN, one_line_error, run_cli
from reasonlab.config import ConfigError, load_config

# Nine levels of nine aliases in one list: a few hundred bytes that expand to 9^9 (387 million)
# values wherever the list is copied, printed or written out.
ALIAS_BOMB = (
    "["
    + ", ".join(
        f"&{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['1'] * 9)}]"
        for prev, name in zip([None, *"abcdefgh"], "abcdefghi", strict=True)
    )
    + "]"
)


def cli_error(capsys, *args: object) -> str:
    code, _, err = run_cli(list(args), capsys)
    message = one_line_error(err)
    assert code == 2, err
    return message


def test_a_key_given_twice_is_refused_naming_the_key_the_line_and_the_file(write_yaml, capsys):
    path = write_yaml(
        "model:\n  n_layers: 1\ntrain:\n  steps: 5\n  batch_size: 8\n  steps: 7\n", "dup.yaml"
    )
    message = cli_error(capsys, "config", path)
    assert "dup.yaml" in message and "train.steps" in message
    assert "line 6" in message  # the second `steps`
    # The same in a nested section and in a --set value; a merge key's own keys still win.
    assert "task.lam" in cli_error(capsys, "config", write_yaml("task:\n  lam: 1\n  lam: 2\n"))
    assert "steps" in cli_error(capsys, "config", "--set", "train={steps: 5, steps: 6}")
    merged = write_yaml("train:\n  <<: {steps: 3, batch_size: 4}\n  steps: 5\n", "merge.yaml")
    cfg = load_config(merged)
    assert (cfg.train.steps, cfg.train.batch_size) == (5, 4)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("train:\n  steps: true\n", "train.steps"),
        ("train:\n  lr: false\n", "train.lr"),
        ("train:\n  betas: [0.9, true]\n", "train.betas"),
        ("model:\n  n_layers: yes\n", "model.n_layers"),
        ("task:\n  kind: copy\n  test_lengths: [5, true]\n", "task.test_lengths"),
        ("eval:\n  sample: true\n", "eval.sample"),
    ],
)
def test_a_boolean_where_a_number_belongs_is_refused(write_yaml, capsys, text, key):
    message = cli_error(capsys, "config", write_yaml(text))
    assert message.startswith(f"{key}: ") and "boolean" in message


def test_booleans_are_refused_in_overrides_while_ints_still_serve_float_fields(write_yaml):
    with pytest.raises(ConfigError, match=r"^train\.steps: .*boolean"):
        load_config(None, ["train.steps=true"])
    cfg = load_config(write_yaml("train:\n  lr: 1\n  weight_decay: 0\n"))
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.weight_decay == 0.0 and cfg.log.progress is True


def test_set_of_a_section_merges_into_it(write_yaml):
    path = write_yaml(yaml.safe_dump(TINY_RUN))
    cfg = load_config(path, ["train={steps: 5}"])
    assert cfg.train.steps == 5
    assert cfg.train.batch_size == TINY_RUN["train"]["batch_size"] != 512  # kept, not reset
    assert cfg.train.warmup_steps == TINY_RUN["train"]["warmup_steps"]
    assert load_config(path, ["train={}"]).train == load_config(path).train
    # A kind given with other keys switches the family first and keeps the keys given with it.
    mamba = load_config(path, ["model={d_state: 8, kind: mamba}"]).model
    assert mamba.kind == "mamba" and mamba.d_state == 8
    assert mamba.d_model == TINY_RUN["model"]["d_model"]


def test_an_alias_bomb_is_refused_in_one_short_line(write_yaml, capsys):
    message = cli_error(capsys, "config", write_yaml(f"task:\n  khop: {ALIAS_BOMB}\n", "bomb.yaml"))
    assert "bomb.yaml" in message and "aliases" in message and len(message) < 300
    # Aliases that expand to a few values are fine.
    cfg = load_config(write_yaml("task:\n  khop: &k [3, 4]\n  kind: twohop\n"))
    assert cfg.task.khop == [3, 4]


def test_an_integer_yaml_cannot_build_is_one_line(write_yaml, capsys):
    message = cli_error(capsys, "config", write_yaml("train:\n  steps: " + "9" * 5000 + "\n"))
    assert "config.yaml" in message and len(message) < 400
