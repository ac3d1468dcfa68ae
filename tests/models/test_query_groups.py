"""The dense method's text side in class groups (issue 13): the same outputs as every query at once.

The reference is the same method with one group (every query through the rule's own `assemble`,
the path the parity tests pin to the peers' code); the grouped run has a bound so small that each
class, or a few, is a group of its own, so the cross-group softmaxes (log-sum-exp terms), the
per-group canvases, PAMR and the offsets of classes and names are all exercised. The grouped
einsum sees fewer queries, so a cosine can differ by one float32 ulp (times the logit scale):
scores are compared to a relative 3e-5, labels and winners exactly where the reference's top-two
gap (and the gap to prob_thd) exceeds that rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmseg.labelset import LabelSet
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.methods import build_method
from llmseg.stage2.methods.dense import QueryGroup, query_groups
from llmseg.stage2.ops.assembly import AssemblyRule, assemble, assemble_group, finish_groups, has_group_form
from llmseg.stage2.registry_tables import ASSEMBLY_RULES

CLASSES = ["background", "cat", "dog", "car", "sky", "grass"]
LABELS = LabelSet({
    "background": ["background"],
    "cat": ["tabby", "kitten", "cat"],
    "dog": ["puppy"],
    "car": ["sedan", "truck"],
    "sky": ["sky", "cloud"],
    "grass": ["grass", "lawn", "green grass"],
})
RULES = ["none", "max", "mean", "softmax", "chils"]


@pytest.fixture(scope="module")
def backbone(tiny_openclip):
    return tiny_openclip(seed=4)


def _method(backbone, rule, **overrides):
    settings = {"preset": "sclip", "short_side": 56, "crop": 32, "stride": 16, "templates": "single", "assembly": rule}
    config = MethodConfig(random_weights=True, **{**settings, **overrides})
    return build_method(config, CLASSES, dataset="pascal_voc", backbone=backbone, label_set=None if rule == "none" else LABELS)


def _grouped(method, max_queries):
    """Force groups of at most `max_queries` text queries and count the canvases the text side builds."""
    method._elements_per_query = lambda enc, height, width: 1
    method.group_elements = max_queries
    calls = []
    canvas = type(method)._canvas

    def counting(enc, queries):
        calls.append(queries.shape[0])
        return canvas(method, enc, queries)

    method._canvas = counting
    return calls


RTOL, ATOL = 3e-5, 1e-7


def _decided(scores, thd=None):
    """Pixels whose outcome float32 rounding cannot change: top-two gap (and distance to the threshold) beyond it."""
    top2 = np.sort(scores, axis=0)[-2:]
    margin = 2 * (RTOL * top2[1] + ATOL)
    ok = top2[1] - top2[0] > margin
    if thd is not None:
        ok &= np.abs(top2[1] - thd) > margin
    return ok


def _threshold_in_gap(best, quantile):
    """A prob_thd near this quantile of the best scores, halfway into a gap wider than the rounding (upsampled
    logits repeat values, so a plain quantile can sit on many pixels at once)."""
    values = np.unique(best)
    gaps = np.diff(values) > 8 * (RTOL * values[1:] + ATOL)
    j = int(np.searchsorted(values, np.quantile(best, quantile)))
    j = j + int(np.argmax(gaps[j:]))
    assert gaps[j]
    return float(values[j] + values[j + 1]) / 2


def _assert_same(ref, got, thd=None):
    np.testing.assert_allclose(got.scores, ref.scores, rtol=RTOL, atol=ATOL)
    decided = _decided(ref.scores)
    assert decided.mean() > 0.99
    # the winning name of the winning class (what `subclass` reports) where the class is decided
    best = ref.scores.argmax(0)[None]
    assert (np.take_along_axis(got.winners, best, 0) == np.take_along_axis(ref.winners, best, 0))[0][decided].all()
    r, g = ref.finish(), got.finish()
    keep = _decided(r.scores, thd)
    assert keep.mean() > 0.99
    np.testing.assert_array_equal(g.labels[keep], r.labels[keep])
    np.testing.assert_array_equal(g.subclass[keep], r.subclass[keep])
    np.testing.assert_allclose(g.scores, r.scores, rtol=RTOL, atol=ATOL)
    return r


@pytest.mark.parametrize("thresholds", [False, True], ids=["plain", "prob+area_thd"])
@pytest.mark.parametrize("rule", RULES)
def test_grouped_equals_all_queries_at_once(backbone, rule, thresholds):
    method = _method(backbone, rule, prob_thd=None, area_thd=None)
    image = np.random.default_rng(5).integers(0, 256, (48, 70, 3), dtype=np.uint8)
    (ref,) = method.forward([image])
    thd = None
    if thresholds:  # thresholds that act: about a quarter of the pixels under prob_thd, the smallest class dropped
        thd = _threshold_in_gap(ref.scores.max(0), 0.25)
        pred = ref.scores.argmax(0)
        area = np.bincount(pred.ravel(), minlength=len(CLASSES))[1:]
        shares = np.unique(area[area > 0] / area.sum())
        method.settings.update(prob_thd=thd, area_thd=float(shares[:2].mean()) if len(shares) > 1 else 0.0)
        (ref,) = method.forward([image])
    calls = _grouped(method, 3)
    (got,) = method.forward([image])
    extra = int(method.rule.needs_class_sims)
    expected = query_groups(method.names.owners, len(CLASSES), 3, extra_per_class=extra)
    assert len(calls) == len(expected) >= 2  # it really ran in groups, one canvas each
    assert sum(calls) == method.queries.shape[0]
    r = _assert_same(ref, got, thd)
    if thresholds:
        assert (r.labels == 0).any() and r.labels.max() > 0


def test_grouped_with_pamr_and_one_class_per_group(backbone):
    method = _method(backbone, "chils", preset="naclip", pamr=True)  # chils: names and class names in every group
    image = np.random.default_rng(7).integers(0, 256, (36, 44, 3), dtype=np.uint8)
    (ref,) = method.forward([image])
    calls = _grouped(method, 1)  # below any class's size: every class alone
    (got,) = method.forward([image])
    assert len(calls) == len(CLASSES)
    _assert_same(ref, got)


def test_grouped_whole_image_to_original_and_several_images(backbone):
    """Whole-image SCLIP (logits straight to the original size) and a batch of images sharing crop batches."""
    method = _method(backbone, "mean", crop=0, stride=0)
    rng = np.random.default_rng(9)
    images = [rng.integers(0, 256, (50, 66, 3), dtype=np.uint8), rng.integers(0, 256, (61, 47, 3), dtype=np.uint8)]
    refs = method.forward(images)
    _grouped(method, 4)
    gots = method.forward(images)
    for ref, got, image in zip(refs, gots, images, strict=True):
        assert ref.scores.shape == (len(CLASSES), *image.shape[:2])
        _assert_same(ref, got)
    # and a windowed batch: two images' crops share backbone batches, each image keeps its own
    method = _method(backbone, "max")
    method.crop_batch_size = 5
    refs = method.forward(images)
    _grouped(method, 2)
    for ref, got in zip(refs, method.forward(images), strict=True):
        _assert_same(ref, got)


@pytest.mark.parametrize("rule", RULES)
def test_group_terms_combine_to_assemble_float64(rule):
    """The rule level alone, in float64: groups' values and logaddexp'd terms give assemble's scores and winners."""
    gen = torch.Generator().manual_seed(3)
    sizes = [1, 1, 1, 1, 1] if rule == "none" else [1, 3, 1, 2, 4]
    owners = [c for c, k in enumerate(sizes) for _ in range(k)]
    sims = torch.rand(len(owners), 6, 7, generator=gen, dtype=torch.float64) * 0.6 - 0.3
    class_sims = torch.rand(len(sizes), 6, 7, generator=gen, dtype=torch.float64) * 0.6 - 0.3
    weights = torch.rand(len(owners), generator=gen, dtype=torch.float64)
    needs = ASSEMBLY_RULES.get(rule).needs_class_sims
    ref, ref_win = assemble(rule, sims, owners, len(sizes), logit_scale=50.0, class_sims=class_sims if needs else None,
                            weights=weights)
    values, winners, terms = [], [], None
    for group in query_groups(owners, len(sizes), 3):
        local = [o - group.classes.start for o in owners[group.names]]
        v, w, t = assemble_group(rule, sims[group.names], local, group.classes.stop - group.classes.start, logit_scale=50.0,
                                 class_sims=class_sims[group.classes] if needs else None, weights=weights[group.names])
        values.append(v)
        winners.append(w + group.names.start)
        terms = list(t) if terms is None else [torch.logaddexp(a, b) for a, b in zip(terms, t, strict=True)]
    got = finish_groups(rule, torch.cat(values), terms)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    assert torch.equal(torch.cat(winners), ref_win)


def test_query_groups_pack_whole_classes():
    owners = [0, 1, 1, 1, 2, 3, 3, 4, 4, 4, 4, 4, 5]
    for bound in (1, 2, 3, 4, 6, 100):
        for extra in (0, 1):
            groups = query_groups(owners, 6, bound, extra_per_class=extra)
            assert groups[0].classes.start == 0 and groups[-1].classes.stop == 6
            for a, b in zip(groups, groups[1:], strict=False):
                assert a.classes.stop == b.classes.start and a.names.stop == b.names.start
            for g in groups:
                names = owners[g.names]
                assert set(names) == set(range(g.classes.start, g.classes.stop))  # whole classes, nothing else
                size = len(names) + extra * (g.classes.stop - g.classes.start)
                assert size <= bound or g.classes.stop - g.classes.start == 1  # only a too-big class exceeds it
            # greedy: no group could take the next group's first class
            for a, b in zip(groups, groups[1:], strict=False):
                first = owners.count(b.classes.start) + extra
                assert len(owners[a.names]) + extra * (a.classes.stop - a.classes.start) + first > bound
    assert query_groups(owners, 6, 100) == [QueryGroup(slice(0, 6), slice(0, 13))]


def test_rules_without_group_form_run_all_queries_at_once(backbone):
    assert all(has_group_form(ASSEMBLY_RULES.get(name)) for name in RULES)

    class NoGroups(AssemblyRule):  # a user rule with only `assemble` (not registered: the registry stays as it is)
        pass

    assert not has_group_form(NoGroups)
    method = _method(backbone, "max")
    method.rule = NoGroups
    method.group_elements = 1
    enc = method._encode([np.zeros((40, 40, 3), np.uint8)])[0]
    assert method.query_groups_for(enc, 40, 40) == [QueryGroup(slice(0, len(CLASSES)), slice(0, method.num_names))]


def test_banded_argmax_equals_numpy_with_ties(monkeypatch):
    from llmseg.stage2.methods import dense

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (7, 23, 9)).astype(np.float32)  # many ties: the first index must win
    monkeypatch.setattr(dense, "ARGMAX_ELEMENTS", 7 * 9 * 4)  # bands of 4 rows, the last one short
    got = dense.argmax_classes(scores)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, scores.argmax(axis=0))
