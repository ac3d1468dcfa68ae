"""GenerateSettings: generate_label_set's settings model, and the CLI options made from its fields."""

from __future__ import annotations

import pytest
import typer

from llmseg.errors import ConfigError
from llmseg.stage1.cli import subclasses_app
from llmseg.stage1.generate import GenerateSettings, generate_label_set
from llmseg.stage1.options import cli_settings


def test_an_unknown_setting_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="unknown setting 'temprature'"):
        generate_label_set(["cat"], backend="openai", model="m", temprature=0.5)


def test_bounds_are_checked_with_the_field_named():
    with pytest.raises(ConfigError, match="concurrency must be at least 1, got 0"):
        GenerateSettings.build(concurrency=0)


def test_overrides_apply_on_top_of_settings():
    base = GenerateSettings(k=3, temperature=0.7)
    merged = GenerateSettings.build(base, k=4)
    assert (merged.k, merged.temperature) == (4, 0.7) and base.k == 3


def test_every_field_has_a_description():
    assert all(field.description for field in GenerateSettings.model_fields.values())


def test_generate_has_one_option_per_command_line_field_with_its_default_and_help():
    command = typer.main.get_command(subclasses_app).commands["generate"]  # type: ignore[attr-defined]
    params = {p.name: p for p in command.params}
    for name, field in GenerateSettings.model_fields.items():
        if cli_settings(field) is None:
            assert name not in params
            continue
        assert params[name].help == field.description
        assert params[name].default == field.default
    assert params["allow_shared"].opts == ["--allow-shared-subclasses"]
    assert params["k"].min == 1 and params["max_answer_chars"].min is None  # the API names the cap's field instead
