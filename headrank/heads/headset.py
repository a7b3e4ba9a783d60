"""Which attention heads score, with what weight: `all` (ICR) or a list of layer-head pairs from a file."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_PAIR = re.compile(r"^\s*(\d+)\s*[-:.]\s*(\d+)\s*$")


class HeadSetError(ValueError):
    """A head specification that does not parse or does not fit the model."""


@dataclass(frozen=True)
class HeadSet:
    """Heads as sorted (layer, head) pairs with one weight each; `None` heads means every head (ICR)."""

    heads: tuple[tuple[int, int], ...] | None = None
    weights: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.heads is not None:
            if not self.heads:
                raise HeadSetError("a head set needs at least one head")
            if len(set(self.heads)) != len(self.heads):
                raise HeadSetError("a head is listed twice")
            if self.weights is not None and len(self.weights) != len(self.heads):
                raise HeadSetError(f"{len(self.weights)} weights for {len(self.heads)} heads")

    @classmethod
    def all(cls) -> HeadSet:
        return cls()

    @classmethod
    def of(cls, heads: Iterable[tuple[int, int]], weights: Iterable[float] | None = None) -> HeadSet:
        pairs = [(int(layer), int(head)) for layer, head in heads]
        w = None if weights is None else [float(x) for x in weights]
        if w is not None:
            pairs, w = map(list, zip(*sorted(zip(pairs, w)))) if pairs else ([], [])
        else:
            pairs = sorted(pairs)
        return cls(tuple(pairs), None if w is None else tuple(w))

    @classmethod
    def parse(cls, spec: str | Path | HeadSet | None) -> HeadSet:
        """`None`/`"all"`, `"3-1,4-7"`, or a .json/.yaml file (see `to_dict`)."""
        if spec is None or isinstance(spec, HeadSet):
            return spec or cls.all()
        text = str(spec).strip()
        if text == "all":
            return cls.all()
        path = Path(text).expanduser()
        if path.suffix.lower() in {".json", ".yaml", ".yml"}:
            if not path.is_file():
                raise HeadSetError(f"head-set file not found: {path}")
            return cls.from_dict(_read_mapping(path))
        pairs = []
        for part in text.split(","):
            match = _PAIR.match(part)
            if not match:
                raise HeadSetError(f"cannot read head {part!r}: write layer-head pairs like '12-3,14-0', or 'all'")
            pairs.append((int(match[1]), int(match[2])))
        return cls.of(pairs)

    @classmethod
    def from_dict(cls, data: dict) -> HeadSet:
        raw = data.get("heads")
        if raw == "all" or raw is None:
            return cls.all()
        pairs, weights = [], []
        for item in raw:
            if isinstance(item, str):
                match = _PAIR.match(item)
                if not match:
                    raise HeadSetError(f"cannot read head {item!r}")
                pairs.append((int(match[1]), int(match[2])))
                weights.append(1.0)
            elif isinstance(item, dict):
                pairs.append((int(item["layer"]), int(item["head"])))
                weights.append(float(item.get("weight", 1.0)))
            else:
                pairs.append((int(item[0]), int(item[1])))
                weights.append(1.0)
        return cls.of(pairs, weights if any(w != 1.0 for w in weights) else None)

    def to_dict(self) -> dict:
        if self.heads is None:
            return {"heads": "all"}
        weights = self.weights or (1.0,) * len(self.heads)
        return {"heads": [{"layer": la, "head": h, "weight": w} for (la, h), w in zip(self.heads, weights)]}

    def save(self, path: str | Path, selection: dict | None = None) -> None:
        """`selection`: how the heads were chosen (data, budget, ...), kept beside them so that a ranker trained
        from this file can say where its heads came from (`selection_of`)."""
        data = self.to_dict() | ({"selection": selection} if selection else {})
        Path(path).write_text(json.dumps(data, indent=2) + "\n")

    def resolve(self, num_layers: int, num_heads: int) -> HeadSet:
        """The explicit list of heads for a model of this shape; checks every head exists."""
        if self.heads is None:
            return HeadSet.of((la, h) for la in range(num_layers) for h in range(num_heads))
        for layer, head in self.heads:
            if not (0 <= layer < num_layers and 0 <= head < num_heads):
                raise HeadSetError(
                    f"head {layer}-{head} does not exist: the model has {num_layers} layers of {num_heads} heads"
                )
        return self

    def by_layer(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for layer, head in self.heads or ():
            out.setdefault(layer, []).append(head)
        return out

    @property
    def depth(self) -> int:
        """Layers that must run: up to and including the deepest selected layer."""
        return max(layer for layer, _ in self.heads) + 1

    def weight_vector(self) -> list[float]:
        return list(self.weights or (1.0,) * len(self.heads))

    def describe(self) -> str:
        if self.heads is None:
            return "all heads"
        return ",".join(f"{la}-{h}" for la, h in self.heads)


def selection_of(spec: str | Path | HeadSet | None) -> dict | None:
    """The `selection` record of a head-set file (None for inline heads, "all", or a file without one)."""
    if isinstance(spec, HeadSet) or spec is None:
        return None
    path = Path(str(spec).strip()).expanduser()
    if path.suffix.lower() not in {".json", ".yaml", ".yml"} or not path.is_file():
        return None
    return _read_mapping(path).get("selection")


def _read_mapping(path: Path) -> dict:
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if isinstance(data, list):
        data = {"heads": data}
    if not isinstance(data, dict):
        raise HeadSetError(f"{path}: expected a mapping with 'heads' or a list of heads")
    return data
