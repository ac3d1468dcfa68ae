"""`llmseg subclasses --refine`: the flagged subclasses are asked again, the clash named, until the check is clean."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from clashy import FLAGGED, LABEL_SET, REPLACEMENTS, ClashyText, clashy_backbone  # noqa: E402

from llmseg.cli import app  # noqa: E402
from llmseg.labelset import load_meta  # noqa: E402
from llmseg.stage1.refine import refine_label_set  # noqa: E402
from llmseg.stage1.testing.server import ScriptedLLMServer, valid  # noqa: E402
from llmseg.stage2.experiments.label_check import check_label_set_clip  # noqa: E402

runner = CliRunner()


@pytest.fixture
def clashy():
    with clashy_backbone():
        yield


def _user_turns(server, name):
    return [m["content"] for r in server.requests_for(name) for m in r.messages if m["role"] == "user"]


def _check(encoder):
    return lambda current: check_label_set_clip(current, encoder, templates="single")


def test_refine_names_the_clash_and_ends_clean(tmp_path, fast):
    encoder = ClashyText()
    scripts = {name: [valid(new)] for name, new in REPLACEMENTS.items()}
    with ScriptedLLMServer(scripts) as server:
        result = refine_label_set(
            LABEL_SET, _check(encoder), backend="openai", model="scripted", rounds=2,
            backend_options={"base_url": server.base_url, "api_key": "sk-test"}, backoff=fast, progress=False,
        )
        assert sorted(server.classes_requested()) == ["car", "cat", "dog"]  # one request per flagged class, no more
        (cat_turn,) = _user_turns(server, "cat")
        (car_turn,) = _user_turns(server, "car")
        (dog_turn,) = _user_turns(server, "dog")
        assert server.requests_for("car")[0].k == 2 and server.requests_for("cat")[0].k == 1
    assert "'puppy-like cat' is nearer to class 'dog'" in cat_turn and "do not repeat them: 'tabby cat', 'persian cat'" in cat_turn
    assert "'beagle' and 'poodle' are near-duplicates" in dog_turn and "'beagle'" in dog_turn.split("do not repeat them:")[1]
    assert "'sedan' is far from the class name 'car'" in car_turn and "'truck' is far" in car_turn
    assert "dog, car" in cat_turn  # the other classes are still named
    assert result.label_set == {"cat": ["tabby cat", "persian cat", "siamese cat"], "dog": ["beagle", "dalmatian"],
                                "car": ["hatchback", "pickup"]}
    assert [{c: set(v) for c, v in r.flagged.items()} for r in result.rounds] == [FLAGGED]
    assert result.remaining.clean and check_label_set_clip(result.label_set, ClashyText(), templates="single").clean


def test_refine_cli_writes_the_refined_set(tmp_path, clashy):
    folder = tmp_path / "pets"
    folder.mkdir()
    (folder / "classes.txt").write_text("cat\ndog\ncar\n", encoding="utf-8")
    source = folder / "top.json"
    source.write_text(json.dumps(LABEL_SET), encoding="utf-8")
    scripts = {name: [valid(new)] for name, new in REPLACEMENTS.items()}
    with ScriptedLLMServer(scripts) as server:
        res = runner.invoke(app, ["subclasses", "--refine", str(source), "--dataset", str(folder), "--backbone", "clashy",
                                  "--templates", "single", "--model", "scripted", "--base-url", server.base_url,
                                  "--quiet", "--backoff-base", "0.01"], env={"OPENAI_API_KEY": "sk-test"})
        assert res.exit_code == 0, res.output + repr(res.exception)
        assert "'puppy-like cat' is nearer to class 'dog'" in _user_turns(server, "cat")[0]
    out = folder / "top.refined.json"
    refined = json.loads(out.read_text())
    assert refined["cat"] == ["tabby cat", "persian cat", "siamese cat"] and refined["car"] == ["hatchback", "pickup"]
    assert "0 findings remain" in res.output and "round 1: class 'cat'" in res.output
    meta = load_meta(out)
    assert meta.model_extra["refined_from"] == str(source) and meta.model_extra["refine"]["rounds"][0]["replaced"]["dog"] == ["dalmatian"]
    with ScriptedLLMServer() as server:  # the same command again: every answer replayed from the log
        again = runner.invoke(app, ["subclasses", "refine", str(source), "-d", str(folder), "--backbone", "clashy",
                                    "--templates", "single", "--model", "scripted", "--base-url", server.base_url,
                                    "--quiet", "--force"], env={"OPENAI_API_KEY": "sk-test"})
        assert again.exit_code == 0 and server.count() == 0, again.output
    assert json.loads(out.read_text()) == refined
    check = runner.invoke(app, ["validate", str(out), "--classes-file", str(folder / "classes.txt"), "--no-check-length",
                                "--templates", "single", "--backbone", "clashy"])
    assert check.exit_code == 0, check.output


def test_a_clash_that_stays_is_reported_after_the_last_round(fast):
    encoder = ClashyText()
    scripts = {"cat": [valid(["puppy-like cat"]), valid(["puppy-like cat"])], "dog": [valid(["dalmatian"])],
               "car": [valid(["hatchback", "pickup"])]}
    with ScriptedLLMServer(scripts) as server:
        result = refine_label_set(
            LABEL_SET, _check(encoder), backend="openai", model="scripted", rounds=2,
            backend_options={"base_url": server.base_url, "api_key": "sk-test"}, backoff=fast, progress=False,
        )
        turns = _user_turns(server, "cat")
    assert len(turns) == 2 and all("'puppy-like cat' is nearer to class 'dog'" in t for t in turns)
    assert [set(r.flagged) for r in result.rounds] == [{"cat", "dog", "car"}, {"cat"}]
    assert set(result.remaining.flagged()) == {"cat"} and not result.remaining.clean
