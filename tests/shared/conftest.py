import json

import pytest

from llmseg.datasets import get_dataset


@pytest.fixture
def voc_classes():
    return list(get_dataset("pascal_voc").classes)


def _seed_style_voc(classes):
    """A VOC label set in the seed's released format, with the seed's real defects planted."""
    data = {name: [f"{name} type {i}" for i in range(5)] for name in classes}
    data["background"] = ["Natural background ", "sky", "indoor wall", "ground", "water"]  # trailing space
    data["aeroplane"] = ["Commercial_Jetliner", "fighter jet", "propeller plane (small)", "fighter jet", "glider"]
    data["bus"] = ["school bus", "double-decker bus", "minibus", "trolleybus", "coach bus"]
    data["car"] = ["sedan", "hatchback", "minibus", "convertible", "suv"]  # minibus also under bus
    return data


@pytest.fixture
def write_json(tmp_path):
    def write(name, data):
        path = tmp_path / name
        path.write_text(json.dumps(data, indent=2))
        return path

    return write


@pytest.fixture
def seed_style_voc():
    return _seed_style_voc
