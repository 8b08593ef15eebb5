"""YAML read strictly: a key given twice in one mapping is refused (YAML's last-one-wins would
drop the first silently), and so is a document whose aliases expand past ``MAX_YAML_VALUES``
values (an alias bomb stays small in memory but explodes wherever it is copied, printed or
written out). Merge keys (``<<: *base``) still let a mapping's own keys replace merged ones.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reasonlab.config.limits import MAX_YAML_VALUES, cut
from reasonlab.core.errors import ConfigError

MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml's parser where PyYAML has it: a 1 MB value parses in milliseconds instead of a second.
LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str, where: str) -> Any:
    """The data of one YAML document; ``where`` (a file, or ``--set 'k=v'``) starts each error.
    Raises ConfigError for malformed YAML, a duplicated key, an alias bomb, or a value YAML
    cannot build (an integer of thousands of digits)."""
    loader = LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check(loader, node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: malformed YAML{line}") from None
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None
    except ValueError as error:  # e.g. Python's limit on the digits of an integer
        raise ConfigError(f"{where}: a value YAML cannot read ({cut(str(error), 120)})") from None
    finally:
        loader.dispose()


def _check(loader: Any, root: Node, where: str) -> None:
    """Walks the document as its data would be (every alias where it is used), refusing a
    duplicated key and stopping at MAX_YAML_VALUES values. The walk is iterative and bounded, so
    a bomb costs at most MAX_YAML_VALUES steps."""
    stack: list[tuple[Node, tuple[str, ...]]] = [(root, ())]
    count = 0
    while stack:
        node, path = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise ConfigError(
                f"{where}: the YAML holds more than {MAX_YAML_VALUES:,} values once its aliases "
                f"are expanded (at line {node.start_mark.line + 1}); write the values out"
            )
        if isinstance(node, SequenceNode):
            stack.extend((item, (*path, str(i))) for i, item in enumerate(node.value))
        elif isinstance(node, MappingNode):
            seen: dict[Any, None] = {}
            for key_node, value_node in node.value:
                if key_node.tag != MERGE_TAG and isinstance(key_node, ScalarNode):
                    key = loader.construct_object(key_node)
                    name = ".".join((*path, cut(str(key), 80)))
                    if key in seen:
                        line = key_node.start_mark.line + 1
                        raise ConfigError(
                            f"{where}: key {name} given twice (again at line {line}); keep one"
                        )
                    seen[key] = None
                    stack.append((value_node, (*path, cut(str(key), 80))))
                else:
                    stack.append((value_node, path))
