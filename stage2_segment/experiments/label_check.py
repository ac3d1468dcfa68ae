"""CLIP-aware label-set checks: what the text encoder, not the format, finds wrong with a label set.

A label set can be well formed and still confuse the segmenter: a subclass whose embedding is
nearer to another class's name or subclasses than to its own class votes for the wrong class;
two near-identical subclasses waste a slot; subclasses far from their class name drift away from
what the benchmark labels. All three are measured with the backbone that will segment, on the
same prompt templates (`llmseg.stage2.ops.text.text_embeddings`), so the findings are about this
model and not about words in general. Cosines differ between encoders; the thresholds are
options for that reason.

Definitions (cosine similarity of the template-averaged, normalised text embeddings):
- own(s) of subclass s of class c: the highest cosine of s to c's name or to c's other subclasses;
- other(s): the highest cosine of s to any other class's name or subclasses;
  s is *ambiguous* when other(s) > own(s) + margin;
- a pair of subclasses of one class is a *near-duplicate* when their cosine is >= duplicate_threshold;
- a class *spreads* when the mean cosine of its subclasses to its name is < spread_threshold; the
  subclasses below the threshold are the far ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from llmseg.stage2.config import MethodConfig
from llmseg.stage2.methods import load_backbone

if TYPE_CHECKING:
    from llmseg.stage2.backbones.base import Backbone

DUPLICATE_THRESHOLD = 0.95
SPREAD_THRESHOLD = 0.7
MARGIN = 0.0


@dataclass(frozen=True)
class Ambiguity:
    """Subclass `subclass` of `cls` is nearer to `other` (a name or subclass of `other_class`) than to its own class."""

    cls: str
    subclass: str
    own: float
    own_nearest: str
    other_class: str
    other: str
    other_score: float

    def describe(self) -> str:
        what = f"the class name '{self.other}'" if self.other == self.other_class else f"'{self.other}'"
        return (f"'{self.subclass}' is nearer to class '{self.other_class}' ({what}, cosine {self.other_score:.3f}) "
                f"than to its own class '{self.cls}' ('{self.own_nearest}', cosine {self.own:.3f})")


@dataclass(frozen=True)
class NearDuplicate:
    cls: str
    first: str
    second: str
    cosine: float

    def describe(self) -> str:
        return f"'{self.first}' and '{self.second}' are near-duplicates (cosine {self.cosine:.3f})"


@dataclass(frozen=True)
class Spread:
    cls: str
    mean: float
    far: tuple[tuple[str, float], ...]  # (subclass, cosine to the class name) below the threshold

    def describe(self) -> str:
        far = ", ".join(f"'{s}' ({c:.3f})" for s, c in self.far)
        return f"subclasses spread far from the class name '{self.cls}' (mean cosine {self.mean:.3f}); farthest: {far}"


@dataclass
class ClipCheckReport:
    """The findings, plus which subclasses to replace per class (what `subclasses refine` re-asks for)."""

    ambiguous: list[Ambiguity] = field(default_factory=list)
    duplicates: list[NearDuplicate] = field(default_factory=list)
    spread: list[Spread] = field(default_factory=list)
    settings: dict[str, float | str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (self.ambiguous or self.duplicates or self.spread)

    def flagged(self) -> dict[str, dict[str, str]]:
        """class -> {subclass to replace: why}, in the label set's order of findings.

        Ambiguous and far subclasses are replaced; of a near-duplicate pair the second one is.
        """
        out: dict[str, dict[str, str]] = {}
        for a in self.ambiguous:
            out.setdefault(a.cls, {}).setdefault(a.subclass, a.describe())
        for d in self.duplicates:
            out.setdefault(d.cls, {}).setdefault(d.second, d.describe())
        for s in self.spread:
            for name, cosine in s.far:
                out.setdefault(s.cls, {}).setdefault(
                    name, f"'{name}' is far from the class name '{s.cls}' (cosine {cosine:.3f}, the class's mean {s.mean:.3f})"
                )
        return out

    def lines(self) -> list[str]:
        """One warning line per finding, naming the class."""
        out = [f"warning: class '{a.cls}': {a.describe()} [clip-ambiguous]" for a in self.ambiguous]
        out += [f"warning: class '{d.cls}': {d.describe()} [clip-near-duplicate]" for d in self.duplicates]
        out += [f"warning: class '{s.cls}': {s.describe()} [clip-spread]" for s in self.spread]
        return out


def check_embeddings(
    label_set: Mapping[str, Sequence[str]],
    embed: Mapping[str, np.ndarray],
    *,
    duplicate_threshold: float = DUPLICATE_THRESHOLD,
    spread_threshold: float = SPREAD_THRESHOLD,
    margin: float = MARGIN,
) -> ClipCheckReport:
    """The checks on given unit vectors: `embed[text]` for every class name and subclass."""
    report = ClipCheckReport(settings={"duplicate_threshold": duplicate_threshold, "spread_threshold": spread_threshold,
                                       "margin": margin})
    classes = list(label_set)
    # anchors: per class, its name first, then its subclasses (each text once)
    anchors: list[tuple[int, str]] = []
    for index, name in enumerate(classes):
        anchors.append((index, name))
        anchors.extend((index, s) for s in dict.fromkeys(label_set[name]) if s != name)
    matrix = np.stack([np.asarray(embed[text], dtype=np.float64) for _, text in anchors])
    owner = np.array([i for i, _ in anchors])
    texts = [t for _, t in anchors]
    for index, name in enumerate(classes):
        subclasses = list(dict.fromkeys(label_set[name]))
        name_vec = np.asarray(embed[name], dtype=np.float64)
        to_name = []
        for s in subclasses:
            vec = np.asarray(embed[s], dtype=np.float64)
            cos = matrix @ vec
            mine = (owner == index) & (np.array(texts) != s)
            theirs = owner != index
            if s != name:
                to_name.append((s, float(name_vec @ vec)))
            if mine.any() and theirs.any():
                i_own = int(np.flatnonzero(mine)[np.argmax(cos[mine])])
                i_other = int(np.flatnonzero(theirs)[np.argmax(cos[theirs])])
                if cos[i_other] > cos[i_own] + margin:
                    report.ambiguous.append(Ambiguity(name, s, float(cos[i_own]), texts[i_own], classes[owner[i_other]],
                                                      texts[i_other], float(cos[i_other])))
        for i, first in enumerate(subclasses):
            for second in subclasses[i + 1:]:
                cosine = float(np.asarray(embed[first], dtype=np.float64) @ np.asarray(embed[second], dtype=np.float64))
                if cosine >= duplicate_threshold:
                    report.duplicates.append(NearDuplicate(name, first, second, cosine))
        if to_name:
            mean = float(np.mean([c for _, c in to_name]))
            if mean < spread_threshold:
                far = tuple(sorted(((s, c) for s, c in to_name if c < spread_threshold), key=lambda sc: sc[1]))
                report.spread.append(Spread(name, mean, far))
    return report


def check_label_set_clip(
    label_set: Mapping[str, Sequence[str]],
    backbone: Backbone,
    *,
    templates: str | Sequence[str] = "openai80",
    duplicate_threshold: float = DUPLICATE_THRESHOLD,
    spread_threshold: float = SPREAD_THRESHOLD,
    margin: float = MARGIN,
    cache_dir: str | None = None,
) -> ClipCheckReport:
    """Embed every class name and subclass with `backbone`'s text encoder and run `check_embeddings`."""
    # lazy import: start-up time (importing these checks, as stage one's refine does, does not load torch)
    from llmseg.stage2.ops.text import text_embeddings

    texts = list(dict.fromkeys([*label_set, *(s for subs in label_set.values() for s in subs)]))
    vectors = text_embeddings(backbone, texts, templates, cache_dir=cache_dir).double().numpy()
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    report = check_embeddings(dict(label_set), dict(zip(texts, vectors, strict=True)),
                              duplicate_threshold=duplicate_threshold, spread_threshold=spread_threshold, margin=margin)
    report.settings["backbone"] = getattr(backbone, "name", type(backbone).__name__)
    report.settings["templates"] = templates if isinstance(templates, str) else f"{len(templates)} templates"
    return report


def load_text_backbone(backbone: str, pretrained: str | None = None, *, random_weights: bool = False,
                       checkpoint: str | None = None, device: str = "cpu") -> Backbone:
    """A backbone by its CLI spelling (family[:arg]), built through the registry as `evaluate` builds it."""
    fields: dict[str, object] = {"backbone": backbone, "device": device}
    if pretrained is not None:
        fields["pretrained"] = pretrained
    if random_weights:
        fields["random_weights"] = True
    if checkpoint is not None:
        fields["checkpoint"] = checkpoint
    return load_backbone(MethodConfig(**fields))
