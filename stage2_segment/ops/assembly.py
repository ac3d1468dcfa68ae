"""Subclass assembly: per-name similarities -> per-class scores, keeping which name won (docs/methods.md, "Subclass assembly").

`sims` is [N, ...] (one row per flat label-set name, any trailing pixel dims), `owners[n]` the class
of name n (contiguous, ascending: LabelSet.flat_names order). Every function returns
(class values [C, ...], winner [C, ...] int64 flat name index of the winning name per class).

Two levels: `combine_similarities` mixes cosines (the llm-supervision maps, the seed's softmax
query), `assemble` gives probabilities for the dense protocol (softmax with a logit scale). Each
rule is an `AssemblyRule` registered by name in `registry_tables.ASSEMBLY_RULES`; a new rule is one
subclass with `@ASSEMBLY_RULES.register("name")`, usable as `--assembly name`.

A rule may also have a class-group form (`group_terms` / `finish_terms`): the dense method then
runs the names one group of whole classes at a time, so thousands of names (ADE-847 x 5
subclasses) never need [names, H, W] at once; every softmax that spans all names or classes is
carried across the groups as a per-pixel log-sum-exp. A rule without it gets every name at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch

from llmseg.stage2.methods.common import class_slices
from llmseg.stage2.registry_tables import ASSEMBLY_RULES


def group_softmax(values: torch.Tensor, owners: Sequence[int], num_classes: int) -> torch.Tensor:
    """[N] -> [N]: softmax within each class's names (no temperature): the seed's subclass weights."""
    out = torch.empty_like(values)
    for sl in class_slices(owners, num_classes):
        out[sl] = torch.softmax(values[sl], dim=0)
    return out


def group_argmax_onehot(values: torch.Tensor, owners: Sequence[int], num_classes: int) -> torch.Tensor:
    """[N] -> [N]: 1 for the highest-valued name of each class, 0 elsewhere (image-level CHiLS choice)."""
    out = torch.zeros_like(values)
    for sl in class_slices(owners, num_classes):
        out[sl.start + int(values[sl].argmax())] = 1
    return out


def _reduce(values: torch.Tensor, slices: list[slice], how: str, score: torch.Tensor | None = None):
    """Per-class max/mean/sum of `values`; winner = argmax of `score` (default `values`) in the class."""
    score = values if score is None else score
    outs, wins = [], []
    for sl in slices:
        block = values[sl]
        if how == "max":
            best, arg = block.max(dim=0)
            outs.append(best)
            wins.append(arg + sl.start)
            continue
        outs.append(block.mean(dim=0) if how == "mean" else block.sum(dim=0))
        wins.append(score[sl].argmax(dim=0) + sl.start)
    return torch.stack(outs), torch.stack(wins)


class AssemblyRule:
    """A subclass-assembly rule: per-name similarities [N, ...] -> per-class values and winners [C, ...].

    `slices[c]` is the block of rows of class c. `combine` works on cosines, `assemble` returns the
    dense protocol's class probabilities. The methods pass `weights` [N] (image-level, the seed's
    group softmax) for the rule `softmax` and `class_sims` [C, ...] for `chils`.
    """

    one_name_per_class: ClassVar[bool] = False  # the rule needs exactly one name per class
    # What the methods must hand the rule: image-level weights [N] ("softmax": the seed's group
    # softmax of the global cosines, "argmax": one-hot on each class's best subclass), and/or the
    # class-name similarities [C, ...] (`class_sims`).
    image_weights: ClassVar[str | None] = None
    needs_class_sims: ClassVar[bool] = False

    def combine(self, sims: torch.Tensor, slices: list[slice], num_classes: int, *, weights: torch.Tensor | None):
        raise NotImplementedError(f"assembly '{type(self).__name__}' has no cosine-level form")

    def assemble(
        self,
        sims: torch.Tensor,
        slices: list[slice],
        num_classes: int,
        *,
        logit_scale: float,
        class_sims: torch.Tensor | None,
        weights: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"assembly '{type(self).__name__}' has no probability-level form")

    def group_terms(
        self,
        sims: torch.Tensor,
        slices: list[slice],
        num_classes: int,
        *,
        logit_scale: float,
        class_sims: torch.Tensor | None,
        weights: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """One group of whole classes' share of `assemble` (sims, slices, weights, class_sims: the group's own rows).

        Returns per-class values [Cg, ...], winners [Cg, ...] (index into the group's names) and the
        group's terms: float64 log-sum-exp [...] over its rows of each softmax that spans every name or
        class. The caller combines each term over the groups with logaddexp; `finish_terms` on all
        classes' values then gives `assemble`'s scores, equal up to float rounding.
        """
        raise NotImplementedError(f"assembly '{type(self).__name__}' has no class-group form")

    def finish_terms(self, values: torch.Tensor, terms: Sequence[torch.Tensor]) -> torch.Tensor:
        """Class scores [C, ...] from every group's values [C, ...] and the combined terms [...]."""
        raise NotImplementedError(f"assembly '{type(self).__name__}' has no class-group form")


def has_group_form(rule: type[AssemblyRule]) -> bool:
    """Whether the rule can be run one class group at a time (it overrides `group_terms`)."""
    return rule.group_terms is not AssemblyRule.group_terms


def _lse(logits: torch.Tensor) -> torch.Tensor:
    """Log-sum-exp over the rows as float64: max + log(sum exp(x - max)), the exps summed in the logits' dtype
    (as softmax sums them) and only the [...]-sized result in float64, so adding the groups' terms keeps
    the rounding of one softmax without a float64 copy of the group."""
    top = logits.max(dim=0).values
    total = torch.exp(logits - top).sum(dim=0)
    return top.double() + total.double().log()


def _exp_minus(values: torch.Tensor, terms: Sequence[torch.Tensor]) -> torch.Tensor:
    """exp(values - sum of terms), computed in float64, in the values' dtype."""
    out = values.double()
    for term in terms:
        out = out - term
    return out.exp_().to(values.dtype)


def _weighted(rule: str, sims: torch.Tensor, slices: list[slice], weights: torch.Tensor | None):
    if weights is None:
        raise ValueError(f"assembly '{rule}' needs image-level weights")
    w = weights.to(sims.dtype).reshape(-1, *([1] * (sims.ndim - 1)))
    weighted = sims * w
    return _reduce(weighted, slices, "sum")


@ASSEMBLY_RULES.register("none", help="one name per class: the class names themselves")
class NoAssembly(AssemblyRule):
    one_name_per_class = True

    def combine(self, sims, slices, num_classes, *, weights):
        idx = torch.arange(num_classes, device=sims.device).reshape(-1, *([1] * (sims.ndim - 1)))
        return sims, idx.expand_as(sims)

    def assemble(self, sims, slices, num_classes, *, logit_scale, class_sims, weights):
        probs = torch.softmax(sims * logit_scale, dim=0)
        return self.combine(probs, slices, num_classes, weights=None)

    def group_terms(self, sims, slices, num_classes, *, logit_scale, class_sims, weights):
        values, winners = self.combine(sims * logit_scale, slices, num_classes, weights=None)
        return values, winners, ()  # the softmax is over classes: finish_terms has every class's logit

    def finish_terms(self, values, terms):
        return torch.softmax(values, dim=0)


@ASSEMBLY_RULES.register("max", help="the best name of each class (the SCLIP family)")
class MaxAssembly(AssemblyRule):
    how = "max"

    def combine(self, sims, slices, num_classes, *, weights):
        return _reduce(sims, slices, self.how)

    def assemble(self, sims, slices, num_classes, *, logit_scale, class_sims, weights):
        probs = torch.softmax(sims * logit_scale, dim=0)
        return _reduce(probs, slices, self.how)

    def group_terms(self, sims, slices, num_classes, *, logit_scale, class_sims, weights):
        # softmax over all names = exp(logit - lse(all logits)); max: the class's best logit, mean: the
        # log of the mean of its names' exp(logit); the winner is the best logit's name either way
        logits = sims * logit_scale
        if self.how == "max":
            values, winners = _reduce(logits, slices, "max")
        else:
            values = torch.stack([_lse(logits[sl]) - math.log(sl.stop - sl.start) for sl in slices]).to(logits.dtype)
            winners = torch.stack([logits[sl].argmax(dim=0) + sl.start for sl in slices])
        return values, winners, (_lse(logits),)

    def finish_terms(self, values, terms):
        return _exp_minus(values, terms)


@ASSEMBLY_RULES.register("mean", help="the mean over each class's names")
class MeanAssembly(MaxAssembly):
    how = "mean"


@ASSEMBLY_RULES.register("softmax", help="the seed's image-level softmax-weighted query per class")
class SoftmaxAssembly(AssemblyRule):
    image_weights = "softmax"

    def combine(self, sims, slices, num_classes, *, weights):
        return _weighted("softmax", sims, slices, weights)

    def assemble(self, sims, slices, num_classes, *, logit_scale, class_sims, weights):
        combined, winner = self.combine(sims, slices, num_classes, weights=weights)
        return torch.softmax(combined * logit_scale, dim=0), winner

    def group_terms(self, sims, slices, num_classes, *, logit_scale, class_sims, weights):
        combined, winner = self.combine(sims, slices, num_classes, weights=weights)
        return combined * logit_scale, winner, ()  # per-class queries; the softmax over classes waits for finish

    def finish_terms(self, values, terms):
        return torch.softmax(values, dim=0)


@ASSEMBLY_RULES.register("chils", help="CHiLS: best subclass probability x class-name probability")
class ChilsAssembly(AssemblyRule):
    image_weights = "argmax"  # cosine level (llm-supervision): the image's best subclass per class
    needs_class_sims = True  # probability level (dense): p_sub x p_super

    def combine(self, sims, slices, num_classes, *, weights):
        return _weighted("chils", sims, slices, weights)

    def assemble(self, sims, slices, num_classes, *, logit_scale, class_sims, weights):
        if class_sims is None or class_sims.shape[0] != num_classes:
            raise ValueError("assembly 'chils' needs the class-name similarities [C, ...]")
        p_sub = torch.softmax(sims * logit_scale, dim=0)
        p_super = torch.softmax(class_sims * logit_scale, dim=0)
        best, winner = _reduce(p_sub, slices, "max")
        return best * p_super, winner

    def group_terms(self, sims, slices, num_classes, *, logit_scale, class_sims, weights):
        if class_sims is None or class_sims.shape[0] != num_classes:
            raise ValueError("assembly 'chils' needs the class-name similarities [C, ...]")
        logits, class_logits = sims * logit_scale, class_sims * logit_scale
        best, winner = _reduce(logits, slices, "max")
        # log p_sub(best) + log p_super = best + class logit - lse(all names) - lse(all classes)
        values = (best.double() + class_logits.double()).to(logits.dtype)
        return values, winner, (_lse(logits), _lse(class_logits))

    def finish_terms(self, values, terms):
        return _exp_minus(values, terms)


def rule_of(name: str) -> type[AssemblyRule]:
    """The registered rule class (its ClassVars say what inputs it needs)."""
    return ASSEMBLY_RULES.get(name)


def image_weights(
    rule: str, text: torch.Tensor, image_vector: torch.Tensor, owners: Sequence[int], num_classes: int
) -> torch.Tensor | None:
    """The rule's image-level subclass weights [N] from the names' cosines with the image's global vector:
    the seed's group softmax (`softmax`), one-hot on each class's best subclass (`chils`), None for the others."""
    kind = rule_of(rule).image_weights
    if kind is None:
        return None
    weigh = group_softmax if kind == "softmax" else group_argmax_onehot
    return weigh(text @ image_vector, owners, num_classes)


def _check(rule: str, sims: torch.Tensor, owners: Sequence[int], num_classes: int) -> tuple[AssemblyRule, list[slice]]:
    impl = ASSEMBLY_RULES.build(rule)
    if sims.shape[0] != len(owners):
        raise ValueError(f"assembly: {sims.shape[0]} similarity rows for {len(owners)} names")
    slices = class_slices(owners, num_classes)
    if impl.one_name_per_class and len(owners) != num_classes:
        raise ValueError(f"assembly '{rule}' needs one name per class, got {len(owners)} names for {num_classes} classes")
    return impl, slices


def assemble_group(
    rule: str,
    sims: torch.Tensor,
    owners: Sequence[int],
    num_classes: int,
    *,
    logit_scale: float,
    class_sims: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """`AssemblyRule.group_terms` for one group of whole classes: owners, weights, class_sims are the group's own
    (owners counted from 0); winners index the group's names. `finish_groups` completes the scores."""
    impl, slices = _check(rule, sims, owners, num_classes)
    return impl.group_terms(sims, slices, num_classes, logit_scale=logit_scale, class_sims=class_sims, weights=weights)


def finish_groups(rule: str, values: torch.Tensor, terms: Sequence[torch.Tensor]) -> torch.Tensor:
    """Class scores [C, ...] from the groups' values (all classes, in order) and terms combined with logaddexp."""
    return ASSEMBLY_RULES.build(rule).finish_terms(values, terms)


def combine_similarities(
    rule: str,
    sims: torch.Tensor,
    owners: Sequence[int],
    num_classes: int,
    *,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine-level: none = the class row; max / mean over names; softmax / chils = sum_n w_n sims_n.

    `weights` [N] (softmax, chils): image-level weights, e.g. `group_softmax` of the global cosines
    (the seed) or `group_argmax_onehot` (CHiLS picks one subclass per class).
    """
    impl, slices = _check(rule, sims, owners, num_classes)
    return impl.combine(sims, slices, num_classes, weights=weights)


def assemble(
    rule: str,
    sims: torch.Tensor,
    owners: Sequence[int],
    num_classes: int,
    *,
    logit_scale: float,
    class_sims: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability-level rules of the dense protocol.

    none: softmax(scale x sims) over classes. max / mean: softmax over ALL names, then max / mean over
    each class's names (max: the SCLIP family). softmax: the seed's weighted query per class, then
    softmax(scale x .) over classes. chils: p_sub = softmax over all names, p_super = softmax of
    `class_sims` (class-name cosines) over classes; class score = max_n p_sub(n) x p_super(class).
    """
    impl, slices = _check(rule, sims, owners, num_classes)
    return impl.assemble(sims, slices, num_classes, logit_scale=logit_scale, class_sims=class_sims, weights=weights)
