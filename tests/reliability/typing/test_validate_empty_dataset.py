"""Found by mypy (`Path(classes_file)` with classes_file None): `llmseg validate FILE --dataset ""` crashed
with a TypeError traceback instead of the usage error that a missing --dataset gives."""

from pathlib import Path

from typer.testing import CliRunner

from llmseg.cli import app

LABEL_SET = Path(__file__).resolve().parents[3] / "label_sets" / "pascal_voc" / "top5.json"


def test_validate_with_an_empty_dataset_name_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["validate", str(LABEL_SET), "--dataset", ""])
    assert result.exit_code == 2, result.output
    assert "give --dataset NAME or --classes-file FILE" in result.output
    assert not isinstance(result.exception, TypeError)


def test_validate_with_a_classes_file_alone_still_names_the_dataset_after_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "pets"
    folder.mkdir()
    (folder / "classes.txt").write_text("cat\ndog\n", encoding="utf-8")
    label_set = tmp_path / "pets.json"
    label_set.write_text('{"cat": ["tabby cat"], "dog": ["beagle"]}', encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(label_set), "--classes-file", str(folder / "classes.txt")])
    assert result.exit_code == 0, result.output
