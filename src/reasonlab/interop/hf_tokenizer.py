"""The tokenizer of an hf export: ``AutoTokenizer.from_pretrained(OUT)`` turns a task's text into
the model's ids and back, exactly as reasonlab writes that text.

Each id is one token of the run's vocabulary (a ``tokenizers`` WordLevel model over
``vocab.json``, id i = token i, no token added). How tokens are split and joined mirrors the
task's own text formats:

- two-hop (the Grokked JSON layout, ``tasks/twohop/folder.py``): tokens written side by side,
  ``<e_12><r_3><r_7>``; the text is cut at every ``<...>`` token (the folder reader's ``TOKEN``
  pattern) and decoding joins them with nothing between.
- every other token task (``TaskData.decode``, ``reasonlab data``'s ``train.txt`` and
  ``test.txt``: COPY, dynamic programs): tokens separated by a space, ``3 17 42 <sep>``; the
  text is cut at whitespace and decoding joins with one space.

The pad token, the end token (``<eos>`` or ``</a>``: ``eos_token``) and a begin token where the
vocabulary has one are the tokenizer's special tokens, under the ids the model's config names.
Nothing is added around a text when it is encoded (the tasks' rows start with no begin token), and
decoding does not clean up spaces (transformers' clean-up would glue DP's ``,`` to the number before
it). A token outside the vocabulary is an error, as in reasonlab's readers; there is no unknown
token, which the model has no id for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reasonlab.config import ConfigError
from reasonlab.tasks.twohop.folder import TOKEN

# The task kinds whose text writes tokens with nothing between them; every other joins with " ".
JOINED_TASKS = frozenset({"twohop"})
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def joiner(task_kind: str) -> str:
    """What separates two tokens in the text formats of ``task_kind``."""
    return "" if task_kind in JOINED_TASKS else " "


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise ConfigError(
            "--format: hf export needs tokenizers (pip install 'reasonlab[hf]')"
        ) from None
    return tokenizers


def build_tokenizer(tokens: list[str], task_kind: str) -> Any:
    """A ``tokenizers.Tokenizer`` whose ids are the positions of ``tokens`` and whose splitting
    and joining are those of ``task_kind``'s text (see the module docstring)."""
    lib = _tokenizers()
    from tokenizers import decoders, pre_tokenizers
    from tokenizers.models import WordLevel

    tokenizer = lib.Tokenizer(WordLevel({token: i for i, token in enumerate(tokens)}))
    if joiner(task_kind) == "":
        tokenizer.pre_tokenizer = pre_tokenizers.Split(
            lib.Regex(TOKEN.pattern), behavior="isolated"
        )
        tokenizer.decoder = decoders.Fuse()  # the tokens back side by side
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        # no decoder: tokenizers joins the tokens with one space
    return tokenizer


def write_tokenizer(
    out: Path,
    tokens: list[str],
    task_kind: str,
    special: dict[str, int | None],
    max_length: int | None,
) -> None:
    """Saves the tokenizer of ``tokens`` into ``out`` (``tokenizer.json``,
    ``tokenizer_config.json``) with ``special``'s pad / bos / eos ids as its special tokens and
    ``max_length`` (the GPT's positions; None for a Mamba) as its ``model_max_length``."""
    import transformers

    names = {
        f"{role}_token": tokens[token_id]
        for role, token_id in (
            ("pad", special["pad_token_id"]),
            ("bos", special["bos_token_id"]),
            ("eos", special["eos_token_id"]),
        )
        if token_id is not None
    }
    extra: dict[str, Any] = {} if max_length is None else {"model_max_length": max_length}
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(tokens, task_kind),
        clean_up_tokenization_spaces=False,
        **names,
        **extra,
    )
    if len(fast) != len(tokens):  # a special token outside the vocabulary would add an id
        raise RuntimeError(f"tokenizer has {len(fast)} ids for {len(tokens)} tokens")
    fast.save_pretrained(out)
    # transformers 5 names its class TokenizersBackend, which 4.x does not know; both load
    # the PreTrainedTokenizerFast name (the hf extra allows transformers>=4.40).
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
