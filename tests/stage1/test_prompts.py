"""Prompt templates: the bundled ones load, render every variable and hash their bytes."""

from __future__ import annotations

import hashlib

import pytest

from llmseg.stage1.prompts import DEFAULT_PROMPT, PromptError, list_prompts, load_prompt, parse_prompt
from llmseg.stage1.testing.server import ScriptedLLMServer


def test_bundled_templates_load_and_render_every_variable():
    assert {"subclasses.visual.v1", "subclasses.chils.v1"} <= set(list_prompts())
    assert DEFAULT_PROMPT == "subclasses.visual.v1"
    for prompt_id in ("subclasses.visual.v1", "subclasses.chils.v1"):
        template = load_prompt(prompt_id)
        assert template.id == prompt_id and template.version == "1" and template.description
        assert template.sha256 == hashlib.sha256(template.path.read_bytes()).hexdigest()
        messages = template.render("traffic light", 7, "urban street scenes", ["car", "road"])
        assert [m["role"] for m in messages] == ["system", "user"]
        user = messages[1]["content"]
        assert "traffic light" in user and "7" in user and "urban street scenes" in user
        assert '{"subclasses": [' in user  # literal braces survive rendering
        assert not any(f"{{{v}}}" in user for v in ("class_name", "k", "domain", "other_classes"))
        repair = template.render_repair("traffic light", 7, "it gives 3 usable distinct subclasses")
        assert "it gives 3 usable" in repair and "7" in repair
        # the scripted server keys its scripts on the rendered prompt
        assert ScriptedLLMServer().find_class(messages) == ("traffic light", 7)


def test_visual_prompt_names_other_classes_and_chils_does_not():
    visual = load_prompt("subclasses.visual.v1").render("cat", 5, "photos", ["dog", "sofa"])
    chils = load_prompt("subclasses.chils.v1").render("cat", 5, "photos", ["dog", "sofa"])
    assert "dog, sofa" in visual[1]["content"]
    assert "dog" not in chils[1]["content"]
    assert "Generate a list of 5 types of the following" in chils[1]["content"]


def test_user_template_file(tmp_path):
    path = tmp_path / "mine.md"
    path.write_text("---\nid: mine.v2\nversion: 2\n---\nGive {k} kinds of {class_name} as JSON.\n", encoding="utf-8")
    template = load_prompt(path)
    assert template.id == "mine.v2" and template.path == path
    messages = template.render("cat", 3)
    assert messages[-1] == {"role": "user", "content": "Give 3 kinds of cat as JSON."}
    assert messages[0]["role"] == "system"  # the default system turn
    path.write_text("---\nid: mine.v2\nversion: 2\n---\nGive {k} kinds of {class_name} as a JSON list.\n", encoding="utf-8")
    assert load_prompt(path).sha256 != template.sha256


@pytest.mark.parametrize(
    "text, needle",
    [
        ("no header\n{class_name} {k}", "front-matter"),
        ("---\nid: x\n---\n{class_name} {k}", "version"),
        ("---\nid: x\nversion: 1\n---\n## user\nonly {class_name}", "{k}"),
        ("---\nid: x\nversion: 1\n---\n## user\n{class_name} {k}\n## user\nagain", "twice"),
        ("---\nid: x\nversion: 1\n", "not closed"),
    ],
)
def test_bad_templates_name_the_problem(text, needle):
    with pytest.raises(PromptError, match="mine.md") as info:
        parse_prompt(text, source="mine.md")
    assert needle in str(info.value)


def test_unknown_prompt_lists_the_bundled_ones():
    with pytest.raises(PromptError, match="subclasses.visual.v1"):
        load_prompt("subclasses.nope.v9")
