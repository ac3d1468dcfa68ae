"""`llmseg data check`: verify a prepared benchmark before spending GPU time on it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from llmseg.datasets import DatasetSpec

from .pool import parallel_map
from .readers import DataError, SampleRef, label_range_problem, list_samples, load_image, load_label


@dataclass
class CheckReport:
    dataset: str
    num_samples: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, message)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_one(task: tuple[SampleRef, int, bool, int]) -> list[tuple[str, str]]:
    ref, num_classes, reduce_zero_label, ignore_index = task
    problems: list[tuple[str, str]] = []
    image = label = None
    try:
        image = load_image(ref.image_path)
    except DataError as exc:
        problems.append((str(ref.image_path), str(exc)))
    if ref.label_path is not None:
        try:
            label = load_label(ref.label_path, reduce_zero_label, ignore_index)
        except DataError as exc:
            problems.append((str(ref.label_path), str(exc)))
    if image is not None and label is not None:
        if image.shape[:2] != label.shape:
            problems.append(
                (str(ref.label_path), f"size {label.shape[1]}x{label.shape[0]} differs from image {ref.image_path} "
                 f"{image.shape[1]}x{image.shape[0]} (WxH)")
            )
    if label is not None:
        problem = label_range_problem(label, num_classes, ignore_index, reduce_zero_label)
        if problem is not None:
            problems.append((str(ref.label_path), problem))
    return problems


def check_dataset(
    spec: DatasetSpec,
    data_root: str | os.PathLike = "data",
    *,
    limit: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> CheckReport:
    """Every listed image has a readable label of the same size with values in the classes or ignore."""
    report = CheckReport(spec.name)
    try:
        samples = list_samples(spec, data_root, limit)
    except DataError as exc:
        report.problems.append((str(spec.data_dir(data_root) if spec.layout else spec.name), str(exc)))
        return report
    report.num_samples = len(samples)
    tasks = [(ref, spec.num_classes, spec.reduce_zero_label, spec.ignore_index) for ref in samples]
    for problems in parallel_map(_check_one, tasks, workers=workers, desc=f"check {spec.name}", progress=progress):
        report.problems.extend(problems)
    return report
