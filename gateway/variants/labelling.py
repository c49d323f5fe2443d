"""One labelling rule for every version of a classifier: the class names are decided once, for the
whole set of variants.

Where the names come from, first found: ``[model] class_names``; else the ``class_names`` key of the
models' MLmodel metadata (``mlflow.<flavor>.log_model(..., metadata={"class_names": [...]})``), which
every version that has it must agree on. A version logged without it takes the set's names when it
answers the same integer classes (0 to n-1, as scikit-learn's ``classes_`` say), so that "Setosa" and
0 are one label for every version; a version whose names differ, or whose classes the names cannot
cover, stops start-up with one line naming it. Otherwise a label judged against one version's
vocabulary would be wrong on every row of another (issue 34: 131 labels, 0 judged right).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.domain.errors import SchemaMismatch
from gateway.variants.loaded_variant import LoadedVariant
from gateway.variants.output import ModelKind, OutputDecoder


def agree_on_labels(variants: Mapping[str, LoadedVariant]) -> list[str] | None:
    """Give every classifier variant the set's class names (in place), or raise SchemaMismatch naming
    the versions that disagree. Returns the names in force (None: the models' own labels)."""
    named = {name: tuple(v.decoder.class_names) for name, v in variants.items()
             if v.kind is ModelKind.CLASSIFIER and v.decoder.class_names}
    if not named:
        return None
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, names in named.items():
        groups.setdefault(names, []).append(name)
    if len(groups) > 1:
        said = "; ".join(f"{', '.join(who)}: {list(names)}" for names, who in groups.items())
        raise SchemaMismatch(f"the variants name their classes differently ({said}): set [model] class_names, "
                             "or log one class_names metadata for every version (docs/own-models.md)")
    (shared,) = groups
    for name, variant in variants.items():
        if name in named or variant.kind is not ModelKind.CLASSIFIER:
            continue
        classes = variant.decoder.classes
        if classes is not None and not all(_whole(c) and 0 <= int(c) < len(shared) for c in classes):
            raise SchemaMismatch(f"variant {name} ({variant.spec.model_uri}) has no class_names metadata and answers "
                                 f"{classes[:10]}, which {', '.join(named)}'s names {list(shared)} do not cover: "
                                 "set [model] class_names, or log its class_names metadata")
        variant.decoder = OutputDecoder(variant.kind, shared, classes)
    return list(shared)


def _whole(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float)
                                                                         and value.is_integer())
