"""Every assembly rule against a direct per-pixel computation (float64, plain loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmseg.stage2.ops.assembly import (
    assemble,
    class_slices,
    combine_similarities,
    group_argmax_onehot,
    group_softmax,
)

OWNERS = [0, 1, 1, 1, 2, 2]
C = 3
SCALE = 40.0


@pytest.fixture
def sims():
    torch.manual_seed(0)
    return torch.rand(len(OWNERS), 4, 5, dtype=torch.float64) * 0.6 - 0.2


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def _per_pixel(sims, fn):
    out, win = np.zeros((C, *sims.shape[1:])), np.zeros((C, *sims.shape[1:]), dtype=int)
    for y in range(sims.shape[1]):
        for x in range(sims.shape[2]):
            values, winners = fn(sims[:, y, x].numpy())
            out[:, y, x], win[:, y, x] = values, winners
    return out, win


def _members(c):
    return [n for n, o in enumerate(OWNERS) if o == c]


def test_max_rule(sims):
    def fn(v):
        p = _softmax(SCALE * v)
        return [max(p[n] for n in _members(c)) for c in range(C)], [max(_members(c), key=lambda n: p[n]) for c in range(C)]

    got, win = assemble("max", sims, OWNERS, C, logit_scale=SCALE)
    ref, ref_win = _per_pixel(sims, fn)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)
    np.testing.assert_array_equal(win.numpy(), ref_win)


def test_mean_rule(sims):
    def fn(v):
        p = _softmax(SCALE * v)
        return [np.mean([p[n] for n in _members(c)]) for c in range(C)], [max(_members(c), key=lambda n: p[n]) for c in range(C)]

    got, win = assemble("mean", sims, OWNERS, C, logit_scale=SCALE)
    ref, ref_win = _per_pixel(sims, fn)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)
    np.testing.assert_array_equal(win.numpy(), ref_win)


def test_softmax_rule_is_the_seed_weighted_query(sims):
    global_cos = torch.tensor([0.3, 0.1, 0.25, 0.2, -0.1, 0.05], dtype=torch.float64)
    weights = group_softmax(global_cos, OWNERS, C)
    w = np.zeros(len(OWNERS))
    for c in range(C):
        w[_members(c)] = _softmax(global_cos.numpy()[_members(c)])  # no temperature
    np.testing.assert_allclose(weights.numpy(), w, atol=1e-12)

    def fn(v):
        combined = np.array([sum(w[n] * v[n] for n in _members(c)) for c in range(C)])
        return _softmax(SCALE * combined), [max(_members(c), key=lambda n: w[n] * v[n]) for c in range(C)]

    got, win = assemble("softmax", sims, OWNERS, C, logit_scale=SCALE, weights=weights)
    ref, ref_win = _per_pixel(sims, fn)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)
    np.testing.assert_array_equal(win.numpy(), ref_win)
    # cosine level: sum_n w_n <f, t_n> = <f, sum_n w_n t_n>
    raw, _ = combine_similarities("softmax", sims, OWNERS, C, weights=weights)
    np.testing.assert_allclose(raw[1].numpy(), sum(w[n] * sims[n].numpy() for n in _members(1)), atol=1e-12)


def test_chils_rule(sims):
    torch.manual_seed(1)
    class_sims = torch.rand(C, 4, 5, dtype=torch.float64) * 0.4

    def fn_factory():
        def fn(v, y, x):
            p_sub = _softmax(SCALE * v)
            p_super = _softmax(SCALE * class_sims[:, y, x].numpy())
            score = [p_sub[n] * p_super[OWNERS[n]] for n in range(len(OWNERS))]
            return [max(score[n] for n in _members(c)) for c in range(C)], [
                max(_members(c), key=lambda n: score[n]) for c in range(C)
            ]

        return fn

    fn = fn_factory()
    ref = np.zeros((C, 4, 5))
    ref_win = np.zeros((C, 4, 5), dtype=int)
    for y in range(4):
        for x in range(5):
            ref[:, y, x], ref_win[:, y, x] = fn(sims[:, y, x].numpy(), y, x)
    got, win = assemble("chils", sims, OWNERS, C, logit_scale=SCALE, class_sims=class_sims)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)
    np.testing.assert_array_equal(win.numpy(), ref_win)
    # the image-level CHiLS choice used by llm-supervision: one-hot on each class's best name
    onehot = group_argmax_onehot(torch.tensor([0.1, 0.3, 0.2, 0.5, 0.0, -0.1]), OWNERS, C)
    assert onehot.tolist() == [1, 0, 0, 1, 1, 0]


def test_none_rule_and_max_with_one_name_per_class_equals_none():
    torch.manual_seed(2)
    sims = torch.rand(C, 3, 3, dtype=torch.float64)
    none, none_win = assemble("none", sims, [0, 1, 2], C, logit_scale=SCALE)
    ref = torch.softmax(SCALE * sims, dim=0)
    torch.testing.assert_close(none, ref)
    assert (none_win == torch.arange(C).reshape(C, 1, 1)).all()
    for rule in ("max", "mean"):
        got, win = assemble(rule, sims, [0, 1, 2], C, logit_scale=SCALE)
        torch.testing.assert_close(got, none)
        assert torch.equal(win, none_win)


def test_cosine_level_max_mean(sims):
    got, win = combine_similarities("max", sims, OWNERS, C)
    torch.testing.assert_close(got[1], sims[1:4].max(0).values)
    torch.testing.assert_close(win[1], sims[1:4].argmax(0) + 1)
    got, _ = combine_similarities("mean", sims, OWNERS, C)
    torch.testing.assert_close(got[2], sims[4:6].mean(0))


def test_errors():
    with pytest.raises(ValueError, match="grouped by class"):
        class_slices([0, 1, 0], 2)
    with pytest.raises(ValueError, match="class 1 has no names"):
        class_slices([0, 2], 3)
    with pytest.raises(ValueError, match="one name per class"):
        assemble("none", torch.zeros(4, 2), [0, 1, 1, 2], 3, logit_scale=1.0)
    with pytest.raises(ValueError, match="needs image-level weights"):
        assemble("softmax", torch.zeros(4, 2), [0, 1, 1, 2], 3, logit_scale=1.0)
    with pytest.raises(ValueError, match="unknown assembly"):
        assemble("median", torch.zeros(3, 2), [0, 1, 2], 3, logit_scale=1.0)
