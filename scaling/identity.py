"""Trial identity: a hash of every effective config value that changes what a trial computes.

Which values do not (logging, paths, progress, threads, validity checks) is declared once, in the
schema (`scaling.config.runtime`); keys added later leave the hash at their neutral default
(`scaling.config.since`). The `scaling` group is replaced by the network it builds, so grid points
that round to the same stage depths, widths and input size are one trial; the data enter as the
fingerprint of the files read (`scaling.data.fingerprint`), so two datasets under one path or one
dataset under two paths are told apart, or not, by what they hold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from scaling.config import APPLIES, HASHED_AS, IDENTITY, NEUTRAL, Config

HASH_CHARS = 10


def digest(values: Any, chars: int = HASH_CHARS) -> str:
    """Short, stable hash of JSON-able values (key order does not matter)."""
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:chars]


def computing_values(resolved: dict[str, Any], schema: type = Config, root: dict | None = None) -> dict[str, Any]:
    """The resolved config without the fields the schema marks as not changing the result (`root`: the whole
    resolved config, which says where a key of one optimizer, schedule or kind of data applies)."""
    root = resolved if root is None else root
    kept = {}
    for f in dataclasses.fields(schema):
        if f.metadata.get(IDENTITY, True) is False or f.name not in resolved:
            continue
        value = resolved[f.name]
        if NEUTRAL in f.metadata and value == f.metadata[NEUTRAL]:
            continue  # a later key at the value that reproduces the old computation
        if APPLIES in f.metadata and not f.metadata[APPLIES](root):
            continue  # a key that does nothing with this optimizer, schedule or data
        group = _dataclass_of(f)
        name = f.metadata.get(HASHED_AS, f.name)  # a renamed key keeps its old name in the hash
        kept[name] = computing_values(value, group, root) if group and isinstance(value, dict) else value
    return kept


def _dataclass_of(f: dataclasses.Field) -> type | None:
    """The dataclass type of a nested group field (its default factory), else None."""
    factory = f.default_factory
    return factory if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory) else None


def ids(resolved: dict[str, Any], network: dict[str, Any], data: dict[str, Any] | None = None) -> dict[str, str]:
    """The three identities of a trial, from its effective config, the network it builds and the
    fingerprint of its data files (`data`: None for callers that hash configs alone).

    - `recipe`: the baseline and recipe (model, data and train groups): trials that compare;
    - `arch`: recipe + network (no seed): grid points that build the same network share it;
    - `trial_id`: arch + seed: the trial itself, and the hash in its folder name.
    """
    values = computing_values(resolved)
    values.pop("scaling", None)  # enters through the network it builds
    seed = values.pop("seed", None)
    if data is not None:
        values["data_files"] = data
    recipe = digest(values)
    arch = digest({"recipe": recipe, "network": network})
    return {"recipe": recipe, "arch": arch, "trial_id": digest({"arch": arch, "seed": seed})}
