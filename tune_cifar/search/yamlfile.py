"""Reading a search-space file's YAML: safe tags only, ``1e-4`` is a float, no key twice in a
mapping, and a cap on what anchors and aliases may expand to ("billion laughs")."""

from __future__ import annotations

import re
import typing

import yaml

from ..errors import UserError

MAX_VALUES = 100_000  # a space file holds a few hundred values; aliases may not blow it up beyond this


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``) and refuses a key
    given twice in one mapping (PyYAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, typing.Hashable) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (each key may appear once in a mapping)",
                        key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, where: str):
    """Parse YAML with ``_Loader``, refusing a document whose aliases expand it past ``MAX_VALUES``
    values ("billion laughs"): shared parts are counted once per use, each only once computed."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except RecursionError:
        raise UserError(f"{where}: nested too deeply; allowed: a space file of a few levels "
                        f"(see search_spaces/README.md)") from None
    sizes: dict[int, int] = {}

    def size(obj) -> int:
        if not isinstance(obj, (dict, list)):
            return 1
        if id(obj) not in sizes:
            sizes[id(obj)] = MAX_VALUES + 1  # a container inside itself expands without end
            items = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj
            sizes[id(obj)] = min(MAX_VALUES + 1, 1 + sum(size(v) for v in items))
        return sizes[id(obj)]

    try:
        total = size(data)
    except RecursionError:
        total = MAX_VALUES + 1
    if total > MAX_VALUES:
        raise UserError(f"{where}: expands to more than {MAX_VALUES} values (YAML anchors and aliases "
                        f"repeating content); allowed: a space file of at most {MAX_VALUES} values")
    return data


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)
