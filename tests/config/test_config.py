"""Config loading: defaults, --set overrides, and one-line ConfigErrors that name the field."""

from __future__ import annotations

import pytest

from reasonlab.config import (
    ConfigError,
    GPTModelConfig,
    RunConfig,
    TwoHopTaskConfig,
    load_config,
    parse_override,
)


def config_error(write_yaml, text: str, overrides: tuple[str, ...] = ()) -> str:
    path = write_yaml(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    message = str(info.value)
    assert "\n" not in message, f"ConfigError message spans lines: {message!r}"
    assert message.strip() == message and message
    return message


# The documented defaults (docs/config.md, `reasonlab config --defaults`), written out as
# literals so that a changed default fails here instead of being compared with itself.
DOCUMENTED_DEFAULTS = {
    "name": None,
    "task": {
        "kind": "twohop",
        "seed": 0,
        "num_entities": 200,
        "num_relations": 20,
        "out_degree": 10,
        "ood_fraction": 0.05,
        "lam": 4.0,
        "cot": "after_relations",
        "noise_kind": "none",
        "noise_ratio": 0.0,
        "khop": [],
        "id_test_fraction": 0.005,
        "max_probe_size": 3000,
        "data_dir": None,
    },
    "model": {
        "kind": "gpt",
        "n_layers": 4,
        "d_model": 128,
        "n_heads": 4,
        "d_mlp": None,
        "positions": "learned",
        "tie_embeddings": False,
        "dropout": 0.0,
        "max_seq_len": None,
    },
    "train": {
        "steps": 1000,
        "batch_size": 512,
        "lr": 1e-3,
        "weight_decay": 0.1,
        "betas": [0.9, 0.999],
        "warmup_steps": 100,
        "schedule": "constant",
        "min_lr_ratio": 0.1,
        "grad_clip": 1.0,
        "seed": 0,
        "device": "auto",
        "precision": "auto",
    },
    "eval": {"every": 100, "threshold": 0.95, "batch_size": 1024, "at_start": True},
    "log": {"checkpoints": "log", "keep_latest": True, "progress": True},
}


def test_task_only_yaml_gets_every_default(write_yaml):
    """Every documented key has its documented value (new keys may be added beside them)."""
    cfg = load_config(write_yaml("task:\n  kind: twohop\n"))
    assert isinstance(cfg.task, TwoHopTaskConfig)
    resolved = cfg.model_dump(mode="json")
    for section, expected in DOCUMENTED_DEFAULTS.items():
        if not isinstance(expected, dict):
            assert resolved[section] == expected, section
            continue
        actual = {key: resolved[section].get(key, "<missing>") for key in expected}
        assert actual == expected, section
    assert cfg == RunConfig() and cfg.model == GPTModelConfig()  # a file adds nothing of its own


def test_threshold_default_is_095_and_summary_uses_it():
    """eval.threshold defaults to 0.95 (docs/config.md): steps_to_threshold counts 0.95, not 0.5."""
    from reasonlab.config import EvalConfig
    from reasonlab.training.loop import History

    assert EvalConfig().threshold == 0.95 and RunConfig().eval.threshold == 0.95
    records = [{"step": 1, "probe": 0.6}, {"step": 2, "probe": 0.95}]
    summary = History(records).summary(RunConfig().eval.threshold)
    assert summary["steps_to_threshold"] == {"probe": 2}


def test_empty_task_section_defaults_to_twohop(write_yaml):
    cfg = load_config(write_yaml("task:\n"))
    assert cfg.task.kind == "twohop"


def test_resolved_config_round_trips_through_json():
    from reasonlab.config import config_from_dict

    cfg = load_config(None, ["task.cot=interleaved", "task.khop=[4, 3]", "model.n_layers=2"])
    again = config_from_dict(cfg.model_dump(mode="json"))
    assert again == cfg
    assert again.task.cot == "interleaved"
    assert again.task.khop == [3, 4]  # sorted, deduplicated


def test_overrides_are_read_as_yaml(write_yaml):
    path = write_yaml("task:\n  num_entities: 50\nmodel:\n  n_layers: 3\n")
    cfg = load_config(
        path,
        [
            "train.lr=3e-4",
            "train.steps=20",
            "log.progress=false",
            "task.khop=[3, 5]",
            "train.betas=[0.8, 0.95]",
            "model.n_layers=1",
            "name=my run",
            "task.noise_kind=tail",
            "task.noise_ratio=0.25",
        ],
    )
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.steps == 20 and isinstance(cfg.train.steps, int)
    assert cfg.log.progress is False
    assert cfg.task.khop == [3, 5]
    assert cfg.train.betas == (0.8, 0.95)
    assert cfg.model.n_layers == 1  # the override wins over the file
    assert cfg.task.num_entities == 50  # untouched keys of the file stay
    assert cfg.name == "my run"
    assert cfg.task.noise_kind == "tail" and cfg.task.noise_ratio == 0.25


def test_parse_override_values():
    assert parse_override("train.steps=7") == (["train", "steps"], 7)
    assert parse_override("log.progress=true") == (["log", "progress"], True)
    assert parse_override("task.khop=[3]") == (["task", "khop"], [3])
    assert parse_override("eval.threshold=0.5") == (["eval", "threshold"], 0.5)
    assert parse_override("name=a=b") == (["name"], "a=b")


@pytest.mark.parametrize("text", ["train.lr", "train..lr=1", "=3"])
def test_malformed_override_is_a_config_error(text):
    with pytest.raises(ConfigError) as info:
        load_config(None, [text])
    assert "\n" not in str(info.value)
    assert text in str(info.value)


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "field"),
    [
        ("task: {}\nfoo: 1\n", (), "foo"),
        ("task: {}\nmodel:\n  n_layer: 2\n", (), "model.n_layer"),
        ("task:\n  num_entitie: 10\n", (), "task.num_entitie"),
        ("task: {}\n", ("train.warmup=3",), "train.warmup"),
        ("task:\n  lam: -1\n", (), "task.lam"),
        ("task:\n  lam: 0\n", (), "task.lam"),
        ("task:\n  num_entities: many\n", (), "task.num_entities"),
        ("task: {}\ntrain:\n  steps: abc\n", (), "train.steps"),
        ("task: {}\ntrain:\n  steps: 0\n", (), "train.steps"),
        ("task: {}\ntrain:\n  batch_size: -2\n", (), "train.batch_size"),
        ("task: {}\ntrain:\n  weight_decay: -0.1\n", (), "train.weight_decay"),
        ("task: {}\n", ("train.weight_decay=-0.1",), "train.weight_decay"),
        ("task: {}\nmodel:\n  d_model: 0\n", (), "model.d_model"),
        ("task: {}\nmodel:\n  n_layers: -1\n", (), "model.n_layers"),
        ("task: {}\neval:\n  every: 0\n", (), "eval.every"),
        ("task: {}\nlog:\n  progress: maybe\n", (), "log.progress"),
        ("task: {}\nmodel:\n  positions: absolute\n", (), "model.positions"),
        ("task:\n  cot: sometimes\n", (), "task.cot"),
        ("task:\n  khop: [2]\n", (), "task.khop"),
        ("task:\n  ood_fraction: 1.5\n", (), "task.ood_fraction"),
        ("task:\n  kind: fourhop\n", (), "task.kind"),
        ("task: {}\ntrain:\n  device: tpu\n", (), "train.device"),
        ("task: {}\n", ("model.n_heads=0",), "model.n_heads"),
    ],
)
def test_bad_field_names_the_field(write_yaml, yaml_text, overrides, field):
    message = config_error(write_yaml, yaml_text, overrides)
    assert message.startswith(field + ":"), message


@pytest.mark.parametrize(
    ("yaml_text", "section", "mentions"),
    [
        # Cross-field checks: the message starts with the section and names the fields involved.
        ("task: {}\nmodel:\n  d_model: 30\n  n_heads: 4\n", "model", ["n_heads", "d_model"]),
        ("task:\n  num_relations: 8\n  out_degree: 9\n", "task", ["out_degree", "num_relations"]),
        ("task:\n  noise_ratio: 0.2\n", "task", ["noise_ratio", "noise_kind"]),
        (
            "task:\n  noise_kind: bridge\n  noise_ratio: 0.2\n  cot: none\n",
            "task",
            ["noise_kind", "cot"],
        ),
        (
            "task:\n  noise_kind: both\n  noise_ratio: 0.2\n  cot: none\n",
            "task",
            ["noise_kind", "cot"],
        ),
        (
            "task: {}\nmodel:\n  d_model: 6\n  n_heads: 2\n  positions: rotary\n",
            "model",
            ["rotary"],
        ),
    ],
)
def test_inconsistent_values_name_their_fields(write_yaml, yaml_text, section, mentions):
    message = config_error(write_yaml, yaml_text)
    assert message.startswith(section), message
    for name in mentions:
        assert name in message, message


def test_tail_noise_without_cot_is_allowed(write_yaml):
    cfg = load_config(write_yaml("task:\n  noise_kind: tail\n  noise_ratio: 0.2\n  cot: none\n"))
    assert cfg.task.noise_kind == "tail"


def test_many_errors_still_one_line(write_yaml):
    message = config_error(write_yaml, "task:\n  lam: -1\n  num_entities: -3\n  foo: 1\n")
    assert message.startswith("task.")
    assert "more error" in message


def test_malformed_yaml_names_the_file(write_yaml):
    path = write_yaml("task:\n  lam: [1, 2\n  cot: none\n", name="broken.yaml")
    message = config_error(lambda text: path, "")
    assert str(path) in message and "YAML" in message


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["- task\n- model\n", "just a string\n", "42\n"])
def test_yaml_that_is_not_a_mapping_names_the_file(write_yaml, text):
    path = write_yaml(text, name="list.yaml")
    message = config_error(lambda _: path, "")
    assert message.startswith(str(path)), message


@pytest.mark.parametrize("text", ["task: [1, 2]\n", "task: 3\n"])
def test_task_section_that_is_not_a_mapping(write_yaml, text):
    message = config_error(write_yaml, text)
    assert message.startswith("task"), message


def test_section_that_is_not_a_mapping(write_yaml):
    message = config_error(write_yaml, "task: {}\ntrain: 5\n")
    assert message.startswith("train"), message


def test_override_into_a_scalar_is_a_config_error(write_yaml):
    message = config_error(write_yaml, "task: {}\nname: x\n", ("name.sub=1",))
    assert "name" in message
