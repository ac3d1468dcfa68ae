"""CLIP-aware label-set checks: ambiguous, near-duplicate and far-spread subclasses, by constructed vectors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clashy import FLAGGED, LABEL_SET, ClashyText, clashy_backbone, unit  # noqa: E402

from llmseg.cli import app  # noqa: E402
from llmseg.stage2.experiments.label_check import check_embeddings, check_label_set_clip  # noqa: E402

runner = CliRunner()


@pytest.fixture
def clashy():
    with clashy_backbone():
        yield


def test_exactly_the_constructed_clashes_are_flagged():
    report = check_label_set_clip(LABEL_SET, ClashyText(), templates="single")
    assert {c: set(subs) for c, subs in report.flagged().items()} == FLAGGED
    (amb,) = report.ambiguous
    assert (amb.cls, amb.subclass, amb.other_class, amb.other) == ("cat", "puppy-like cat", "dog", "dog")
    assert amb.other_score == pytest.approx(float(unit("puppy-like cat") @ unit("dog")))
    own = max(float(unit("puppy-like cat") @ unit(t)) for t in ("cat", "tabby cat", "persian cat"))
    assert amb.own == pytest.approx(own)
    (dup,) = report.duplicates
    assert (dup.cls, dup.first, dup.second) == ("dog", "beagle", "poodle")
    assert dup.cosine == pytest.approx(float(unit("beagle") @ unit("poodle")))
    (spread,) = report.spread
    assert spread.cls == "car" and {s for s, _ in spread.far} == {"sedan", "truck"}
    assert spread.mean == pytest.approx(np.mean([unit(s) @ unit("car") for s in ("sedan", "truck")]))


def test_thresholds_decide():
    embed = {t: unit(t) for t in {*LABEL_SET, *(s for v in LABEL_SET.values() for s in v)}}
    loose = check_embeddings(LABEL_SET, embed, duplicate_threshold=0.9999, spread_threshold=0.5, margin=0.9)
    assert loose.clean, loose.lines()
    beagle_poodle = float(unit("beagle") @ unit("poodle"))
    just_above = check_embeddings(LABEL_SET, embed, duplicate_threshold=beagle_poodle, spread_threshold=0.0, margin=1.0)
    assert [(d.first, d.second) for d in just_above.duplicates] == [("beagle", "poodle")] and not just_above.ambiguous


def test_validate_backbone_cli_reports_them(tmp_path, clashy):
    folder = tmp_path / "pets"
    folder.mkdir()
    (folder / "classes.txt").write_text("cat\ndog\ncar\n", encoding="utf-8")
    path = folder / "top.json"
    path.write_text(json.dumps(LABEL_SET), encoding="utf-8")
    base = ["validate", str(path), "--classes-file", str(folder / "classes.txt"), "--no-check-length", "--templates", "single"]
    plain = runner.invoke(app, base)
    assert plain.exit_code == 0, plain.output
    res = runner.invoke(app, [*base, "--backbone", "clashy"])
    assert res.exit_code == 1, res.output + repr(res.exception)
    warned = [line for line in res.output.splitlines() if "[clip-" in line]
    assert len(warned) == 3
    assert any("'puppy-like cat' is nearer to class 'dog'" in line and "[clip-ambiguous]" in line for line in warned)
    assert any("'beagle' and 'poodle' are near-duplicates" in line for line in warned)
    assert any("class 'car'" in line and "[clip-spread]" in line for line in warned)
    assert "3 warnings" in res.output
    bad = runner.invoke(app, [*base, "--backbone", "nosuch"])
    assert bad.exit_code == 2 and "nosuch" in bad.output
