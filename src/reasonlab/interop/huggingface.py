"""Export a trained run to other libraries' formats.

``hf``: a Hugging Face checkpoint that ``AutoModelForCausalLM.from_pretrained(OUT)`` loads with the
same logits as ours; ``to_hf(model)`` picks the conversion by ``model.family``.

- GPT -> ``GPT2LMHeadModel``. The two models are the same function written twice: pre-LN blocks,
  q/k/v packed in one projection, tanh GELU ("gelu_new"), learned positions, no unembedding bias.
  The one layout difference is that GPT-2's ``Conv1D`` stores weights (in, out) where
  ``nn.Linear`` stores them (out, in), so every projection is transposed. Rotary positions have no
  GPT-2 counterpart and are refused.
- Mamba -> ``MambaForCausalLM``. Same blocks, same parameter shapes (A_log, D, depthwise conv
  weights (d_inner, 1, d_conv)); only the names differ.

Both configs carry the task's own special tokens (``special_token_ids``): ``pad_token_id`` the
padding, ``eos_token_id`` the token that ends an answer (``<eos>`` for COPY and DP, ``</a>`` for
two-hop), so that ``generate`` stops where the task's answer ends; ``bos_token_id`` is None, as no
task starts its rows with a begin token. The token of each id is written to
``reasonlab_vocab.json`` (a plain list), a name no Hugging Face tokenizer reads.

Beside the weights: the tokenizer (``hf_tokenizer.py``: ``AutoTokenizer.from_pretrained(OUT)``
encodes the task's text to these ids and decodes them back) and the model card (``README.md``,
``model_card.py``). A run of a vector task (in-context regression) has no tokens and is refused.

``transformers`` is imported only here, when an export is asked for.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from reasonlab.config import ConfigError, GPTModelConfig, RunConfig, TwoHopTaskConfig
from reasonlab.core.files import atomic_path, make_dir, require_empty_folder, write_json
from reasonlab.interop.hf_tokenizer import write_tokenizer
from reasonlab.interop.model_card import model_card
from reasonlab.models.gpt import GPT
from reasonlab.runs.folder import RunDir
from reasonlab.tasks import VECTOR_TASKS
from reasonlab.tasks.twohop.encoding import Vocabulary

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel, MambaForCausalLM, PreTrainedModel

    from reasonlab.models.base import LanguageModel
    from reasonlab.models.mamba import Mamba

FORMATS = ("hf",)
# Not vocab.json: AutoTokenizer reads that name as a GPT-2 tokenizer's token -> id map.
VOCAB_FILE = "reasonlab_vocab.json"
# The token that closes a completion in each task's vocabulary, in the order they are looked for:
# <eos> (COPY, DP), </a> (two-hop, generated or a Grokked-transformers folder).
END_TOKENS = ("<eos>", "</a>")
PAD_TOKEN = "<pad>"
BOS_TOKENS = ("<bos>", "<s>")  # no task has one today; a task that adds one gets it exported


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "--format: hf export needs transformers (pip install 'reasonlab[hf]')"
        ) from None
    return transformers


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silences transformers' progress bars and log messages (its "Writing model shards" bar,
    notes about generation configs) while an export runs, then restores its settings."""
    logging = _transformers().utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def special_token_ids(tokens: list[str] | None) -> dict[str, int | None]:
    """``pad_token_id``, ``bos_token_id`` and ``eos_token_id`` of a run's vocabulary (the token
    of each id): the task's padding, its begin token if it has one, and the token that ends an
    answer. None where the vocabulary has no such token, or is unknown."""
    tokens = tokens or []

    def first_of(names: tuple[str, ...]) -> int | None:
        return next((tokens.index(name) for name in names if name in tokens), None)

    return {
        "pad_token_id": first_of((PAD_TOKEN,)),
        "bos_token_id": first_of(BOS_TOKENS),
        "eos_token_id": first_of(END_TOKENS),
    }


NO_SPECIAL_TOKENS = special_token_ids(None)


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our GPT's weights under GPT-2's names and in its layout (Conv1D weights are (in, out))."""
    ours = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    state = {
        "transformer.wte.weight": ours["embed.weight"],
        "transformer.wpe.weight": ours["pos_embed.weight"],
        "transformer.ln_f.weight": ours["ln_final.weight"],
        "transformer.ln_f.bias": ours["ln_final.bias"],
        "lm_head.weight": ours["unembed.weight"],
    }
    renames = {
        "ln1": "ln_1",
        "ln2": "ln_2",
        "attn.W_qkv": "attn.c_attn",
        "attn.W_out": "attn.c_proj",
        "mlp.W_in": "mlp.c_fc",
        "mlp.W_out": "mlp.c_proj",
    }
    for layer in range(model.cfg.n_layers):
        for our_name, hf_name in renames.items():
            weight = ours[f"blocks.{layer}.{our_name}.weight"]
            is_linear = not our_name.startswith("ln")
            state[f"transformer.h.{layer}.{hf_name}.weight"] = weight.T if is_linear else weight
            state[f"transformer.h.{layer}.{hf_name}.bias"] = ours[f"blocks.{layer}.{our_name}.bias"]
    return {name: tensor.contiguous().clone() for name, tensor in state.items()}


def require_standard_gpt(model: GPT, target: str) -> None:
    """Refuses what has no counterpart in GPT-2-style libraries: other families, rotary
    positions, continuous inputs or outputs."""
    if not isinstance(model, GPT):
        raise ConfigError(f"model.kind: only GPT models convert to {target}")
    if model.cfg.positions != "learned":
        raise ConfigError(
            f"model.positions: {model.cfg.positions} positions have no {target} counterpart; "
            "only learned positions convert"
        )
    if model.cfg.input_dim is not None or model.cfg.output_dim is not None:
        raise ConfigError(f"model: continuous inputs or outputs have no {target} counterpart")


def to_hf_gpt2(model: GPT, special: dict[str, int | None] = NO_SPECIAL_TOKENS) -> GPT2LMHeadModel:
    """A ``transformers.GPT2LMHeadModel`` (eval mode, no dropout) computing the same logits;
    ``special``: its pad / bos / eos ids (``special_token_ids``)."""
    require_standard_gpt(model, "GPT-2 (hf export)")
    cfg = model.cfg
    transformers = _transformers()
    config = transformers.GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.max_seq_len,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_inner=cfg.d_mlp,
        activation_function="gelu_new",
        layer_norm_epsilon=cfg.layer_norm_eps,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=cfg.tie_embeddings,
        **special,
    )
    return load_every_parameter(transformers.GPT2LMHeadModel(config), hf_state_dict(model), "GPT-2")


def hf_mamba_state_dict(model: Mamba) -> dict[str, torch.Tensor]:
    """Our Mamba's weights under ``MambaForCausalLM``'s names (the layouts are the same)."""
    renames = {
        "embed.": "backbone.embeddings.",
        "blocks.": "backbone.layers.",
        "ln_final.": "backbone.norm_f.",
        "unembed.": "lm_head.",
    }
    state = {}
    for name, tensor in model.state_dict().items():
        prefix = next(p for p in renames if name.startswith(p))
        state[renames[prefix] + name[len(prefix) :]] = tensor.detach().contiguous().clone()
    return state


def to_hf_mamba(
    model: Mamba, special: dict[str, int | None] = NO_SPECIAL_TOKENS
) -> MambaForCausalLM:
    """A ``transformers.MambaForCausalLM`` (eval mode) computing the same logits; ``special``:
    its pad / bos / eos ids (``special_token_ids``)."""
    cfg = model.cfg
    transformers = _transformers()
    config = transformers.MambaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        state_size=cfg.d_state,
        num_hidden_layers=cfg.n_layers,
        expand=cfg.expand,
        conv_kernel=cfg.d_conv,
        time_step_rank=cfg.dt_rank,
        time_step_min=cfg.dt_min,
        time_step_max=cfg.dt_max,
        time_step_floor=cfg.dt_init_floor,
        use_bias=False,
        use_conv_bias=True,
        layer_norm_epsilon=cfg.norm_eps,
        residual_in_fp32=True,
        tie_word_embeddings=cfg.tie_embeddings,
        **special,
    )
    hf = transformers.MambaForCausalLM(config)
    return load_every_parameter(hf, hf_mamba_state_dict(model), "MambaForCausalLM")


HF_CONVERSIONS = {"gpt": to_hf_gpt2, "mamba": to_hf_mamba}


def to_hf(
    model: LanguageModel, special: dict[str, int | None] = NO_SPECIAL_TOKENS
) -> PreTrainedModel:
    """The Hugging Face causal LM of ``model``'s family with the same weights and logits, and
    ``special`` as its pad / bos / eos ids."""
    if model.family not in HF_CONVERSIONS:
        raise ConfigError(f"model.kind: {model.family} models do not export to hf")
    return HF_CONVERSIONS[model.family](model, special)  # type: ignore[operator]


def load_every_parameter(target: torch.nn.Module, state: dict[str, torch.Tensor], what: str):
    """Loads ``state`` into ``target``, which must receive every parameter (buffers such as
    causal masks are rebuilt by the target); returns it in eval mode."""
    missing, unexpected = target.load_state_dict(state, strict=False)
    parameters = dict(target.named_parameters())
    missing = [name for name in missing if name in parameters]
    if missing or unexpected:
        raise RuntimeError(f"{what} layout mismatch: missing {missing}, unexpected {unexpected}")
    return target.eval()


def run_vocab(run: RunDir, config: RunConfig) -> list[str] | None:
    """The token of each id: the run's own vocab.json, or for runs made before it was written,
    the generated two-hop vocabulary, the data_dir folder's, or the rebuilt task's."""
    tokens = run.vocab()
    if tokens is not None:
        return tokens
    task = config.task
    if not isinstance(task, TwoHopTaskConfig):
        from reasonlab.tasks import build_task

        return build_task(task).vocab  # None for a task of vectors
    if task.data_dir is None:
        return Vocabulary(task.num_entities, task.num_relations).tokens
    from reasonlab.tasks.twohop.folder import read_vocab

    try:
        return read_vocab(Path(task.data_dir) / "vocab.json")
    except ConfigError:
        return None  # the folder is gone: the export still has the weights


def export_run(
    run_dir: str | Path, out: str | Path, fmt: str = "hf", checkpoint: str = "last"
) -> dict[str, Any]:
    """Writes checkpoint ``checkpoint`` ('last' or a step) of a run to ``out`` in format ``fmt``;
    returns what ``reasonlab_export.json`` records."""
    out = Path(out)
    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    require_empty_folder(out, "OUT")  # OUT is the command's second argument
    run = RunDir(run_dir)
    config = run.load_config()
    if config.task.kind in VECTOR_TASKS:
        raise ConfigError(
            f"--format: hf exports models of token tasks; task.kind {config.task.kind} reads and "
            "writes vectors"
        )
    if config.model.kind not in HF_CONVERSIONS:
        kinds = " and ".join(HF_CONVERSIONS)
        raise ConfigError(f"model.kind: only {kinds} models export to hf, not {config.model.kind}")
    if isinstance(config.model, GPTModelConfig) and config.model.positions != "learned":
        raise ConfigError(
            f"model.positions: {config.model.positions} positions have no GPT-2 counterpart; "
            "only learned positions export to hf"
        )
    _transformers()  # fail before any work when the extra is missing
    steps = run.checkpoint_steps()
    if not steps:
        raise ConfigError(f"{run.checkpoint_dir}: no checkpoint to export")
    if checkpoint == "last":
        step = steps[-1]
    elif checkpoint.isdigit() and int(checkpoint) in steps:
        step = int(checkpoint)
    else:
        raise ConfigError(f"--checkpoint: {checkpoint!r} is not last or one of {steps}")

    model = run.load_model(step, config)
    vocab_size = model.cfg.vocab_size
    seq_len = getattr(model.cfg, "max_seq_len", None)  # a Mamba takes any length

    tokens = run_vocab(run, config)
    if tokens is not None and len(tokens) != vocab_size:
        tokens = None  # not this model's vocabulary: export the weights, name no token
    special = special_token_ids(tokens)
    make_dir(out, "OUT")
    with _quiet_transformers():
        hf = to_hf(model.float().eval(), special)
        hf.save_pretrained(out)
    record: dict[str, Any] = {
        "format": fmt,
        "source_run": str(run.path.resolve()),
        "step": step,
        "vocab_size": vocab_size,
        "max_seq_len": seq_len,
        "task": config.task.kind,
        **special,
    }
    if tokens is not None:
        write_json(out / VOCAB_FILE, tokens)
        record["vocab"] = VOCAB_FILE
        with _quiet_transformers():
            write_tokenizer(out, tokens, config.task.kind, special, seq_len)
        record["tokenizer"] = "tokenizer.json"
    command = ["reasonlab", "export", str(run_dir), str(out), "--format", fmt]
    card = model_card(
        run, config, record, tokens, shlex.join([*command, "--checkpoint", str(step)])
    )
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text(card)
    write_json(out / "reasonlab_export.json", record)
    return record
