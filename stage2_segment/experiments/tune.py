"""`llmseg tune`: choose a method's free numbers on a held-out split, then evaluate once on val.

Every peer tunes its thresholds on the validation split it reports. Here the numbers are chosen
on another split and the evaluation split is touched once, at the end:

    tune_images.txt    a seeded subset of --tune-split (never the evaluation split; no image of it)
    trials/<key>/      one ordinary `evaluate` run per point of the search space (resumable, reused)
    <name>.json        the best point as a preset file (`llmseg evaluate --preset <name>.json`)
    final/             the evaluation split, evaluated once through that preset file
    tune.json/tune.md  every trial's mIoU, the choice, which split chose it, the final numbers

The search space is data: FIELD=V1,V2,... for the fields in TUNABLE_FIELDS (`none` is None),
searched as a full grid or as a seeded random sample of it. The best trial is the one with the
highest mIoU on the tuning images; ties go to the earlier trial of the search order.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from llmseg.datasets import DatasetSpec, file_name_problem, get_dataset
from llmseg.errors import ConfigError, LlmsegError
from llmseg.io import atomic_write_json, atomic_write_text, sha256_file, stable_hash
from llmseg.labelset import load_label_set
from llmseg.locks import hold_folder
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.data.readers import DataError, list_samples
from llmseg.stage2.engine import runner
from llmseg.stage2.engine.run_folder import clear_results, finished_metrics, marker_key, write_marker
from llmseg.stage2.methods import (
    PRESET_CONFIG_FIELDS,
    _dataset_background,
    build_method,
    load_backbone,
    method_options_of,
)
from llmseg.stage2.methods.common import has_background
from llmseg.stage2.methods.presets import DENSE_KEYS, PresetFile, check_applicable, load_preset
from llmseg.stage2.preflight import check_dataset, check_method_inputs

# MethodConfig fields a tuning run may choose; each is None by default (= the preset's / method's).
TUNABLE_FIELDS = ("prob_thd", "logit_scale", "area_thd", "top_cls_num", "assembly", "k")
DEFAULT_TUNE_SPLIT = "train"
DEFAULT_TUNE_IMAGES = 500
DEFAULT_MAX_TRIALS = 64
SUBSET_FILE = "tune_images.txt"
TRIAL_FILE = "trial.json"
NONE_WORDS = ("none", "null")


class TuneError(LlmsegError, RuntimeError):
    """A tuning run cannot go on: the tuning split is the evaluation split, or a folder holds other work."""


# --- the search space ------------------------------------------------------------------------------


def _parse_value(field_name: str, text: str) -> Any:
    """One candidate value, typed and checked by MethodConfig itself (ConfigError names the field)."""
    text = text.strip()
    value: Any = None if text.lower() in NONE_WORDS else text
    try:
        checked = MethodConfig.model_validate({field_name: value})
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--grid {field_name}: bad value '{text}': {message}") from None
    return getattr(checked, field_name)


@dataclass(frozen=True)
class SearchSpace:
    """Candidate values per field, in the order given; `points()` is the grid in that order."""

    values: dict[str, tuple[Any, ...]]

    @classmethod
    def parse(cls, specs: Sequence[str]) -> SearchSpace:
        """`FIELD=V1,V2,...` per entry (e.g. `prob_thd=0,0.1,0.2`, `area_thd=none,0.1`, `k=1,3,5`)."""
        values: dict[str, tuple[Any, ...]] = {}
        for spec in specs:
            name, sep, listed = spec.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or not listed.strip():
                raise ConfigError(f"--grid expects FIELD=V1,V2,..., got '{spec}'")
            if name not in TUNABLE_FIELDS:
                raise ConfigError(f"--grid {name}: not a tunable setting; tunable: {', '.join(TUNABLE_FIELDS)}")
            if name in values:
                raise ConfigError(f"--grid {name} is given twice")
            parsed = [_parse_value(name, item) for item in listed.split(",")]
            values[name] = tuple(dict.fromkeys(parsed))  # repeated values would only repeat trials
        return cls(values)

    def size(self) -> int:
        total = 1
        for candidates in self.values.values():
            total *= len(candidates)
        return total

    def points(self) -> list[dict[str, Any]]:
        names = list(self.values)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(self.values[n] for n in names))]

    def sample(self, trials: int, seed: int) -> list[dict[str, Any]]:
        """`trials` distinct grid points drawn with `seed` (the whole grid when it is smaller), grid order kept."""
        points = self.points()
        if trials >= len(points):
            return points
        chosen = sorted(random.Random(seed).sample(range(len(points)), trials))
        return [points[i] for i in chosen]


def _label_set_size(config: MethodConfig, classes: Sequence[str]) -> int | None:
    """The largest number of subclasses of any class in the configured label set (None: no label set)."""
    if not config.label_set:
        return None
    label_set = load_label_set(str(config.label_set), list(classes))
    return max(len(label_set.subclasses(c)) for c in label_set.classes)


def default_space(config: MethodConfig, spec: DatasetSpec) -> SearchSpace:
    """A small grid around the usual values of the fields this method reads, for this dataset.

    dense: logit_scale {40, 50, 65}; on datasets with a background class also prob_thd
    {0, 0.1, 0.2} and area_thd {none, 0.1}. llm-supervision: top_cls_num {5, 10, 20} (at most C)
    and the assembly rules softmax / max. With a label set of K > 1 subclasses: k {1, K//2, K}.
    """
    reads = set(method_options_of(config).model_fields)
    background = has_background(list(spec.classes), _dataset_background(spec.name))
    values: dict[str, tuple[Any, ...]] = {}
    if "logit_scale" in reads:
        values["logit_scale"] = (40.0, 50.0, 65.0)
    if background and "prob_thd" in reads:
        values["prob_thd"] = (0.0, 0.1, 0.2)
    if background and "area_thd" in reads:
        values["area_thd"] = (None, 0.1)
    if "top_cls_num" in reads:
        values["top_cls_num"] = tuple(dict.fromkeys(min(n, spec.num_classes) for n in (5, 10, 20)))
    if config.label_set and "top_cls_num" in reads:
        values["assembly"] = ("softmax", "max")
    size = _label_set_size(config, spec.classes)
    if size is not None and size > 1:
        values["k"] = tuple(sorted({1, max(1, size // 2), size}))
    if not values:
        raise ConfigError(f"method '{config.method}' has no default search space here: give one with --grid FIELD=V1,V2")
    return SearchSpace(values)


# --- the splits ----------------------------------------------------------------------------------


def choose_subset(stems: Sequence[str], n: int | None, seed: int) -> list[str]:
    """`n` stems drawn with `seed` (all when n is None or larger), in the split's own order."""
    if n is None or n >= len(stems):
        return list(stems)
    if n < 1:
        raise ConfigError(f"--tune-images must be at least 1, got {n}")
    picked = sorted(random.Random(seed).sample(range(len(stems)), n))
    return [stems[i] for i in picked]


def tuning_spec(spec: DatasetSpec, tune_split: str, data_root: str | os.PathLike, out: Path, n: int | None,
                seed: int, *, need_evaluation: bool = True) -> tuple[DatasetSpec, list[str]]:
    """The dataset read from a seeded subset of `tune_split`, written to out/tune_images.txt.

    Refuses the evaluation split itself and any tuning image that is also an evaluation image, by path
    or by content (a byte copy under another name; when the evaluation split is not on disk and
    `need_evaluation` is False, that check is skipped). Images are not decoded here: only file lists
    are read, and the bytes of files whose size equals that of an image of the other split (to hash them).
    """
    if tune_split == spec.split:
        raise TuneError(
            f"--tune-split {tune_split} is {spec.name}'s evaluation split: tuning on it is what this command avoids; "
            f"use another split ({', '.join(s for s in spec.splits if s != spec.split) or 'none described'})"
        )
    held_out = spec.with_split(tune_split)
    check_dataset(held_out, data_root)
    candidates = list_samples(held_out, data_root)
    try:
        evaluation = [ref.image_path for ref in list_samples(spec, data_root)]
    except DataError:
        if need_evaluation:
            raise
        evaluation = []  # no evaluation split on disk and none asked for
    resolved = {path.resolve() for path in evaluation}
    shared = [ref.stem for ref in candidates if ref.image_path.resolve() in resolved]
    if shared:
        raise TuneError(
            f"{len(shared)} images of {spec.name}'s '{tune_split}' split are also in its evaluation split "
            f"'{spec.split}' (e.g. {shared[0]}): the held-out split must not contain evaluation images"
        )
    copies = _byte_copies([ref.image_path for ref in candidates], evaluation)
    if copies:
        mine, theirs = copies[0]
        raise TuneError(
            f"{len(copies)} images of {spec.name}'s '{tune_split}' split are byte copies of images of its evaluation "
            f"split '{spec.split}' (e.g. {mine} = {theirs}): the held-out split must not contain evaluation images"
        )
    stems = choose_subset([ref.stem for ref in candidates], n, seed)
    subset = (out / SUBSET_FILE).resolve()
    atomic_write_text(subset, "".join(f"{s}\n" for s in stems))
    assert held_out.layout is not None  # list_samples above read it
    layout = replace(held_out.layout, split_file=str(subset))  # an absolute path: base / it is it
    return replace(held_out, layout=layout), stems


def _byte_copies(candidates: Sequence[Path], evaluation: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(tuning image, evaluation image) pairs with the same bytes (sha256); only equal sizes are hashed."""
    def size(path: Path) -> int | None:
        try:
            return path.stat().st_size
        except OSError:
            return None  # a missing file is the readers' to report

    by_size: dict[int, list[Path]] = {}
    for path in evaluation:
        n = size(path)
        if n is not None:
            by_size.setdefault(n, []).append(path)
    digests: dict[Path, str] = {}

    def digest(path: Path) -> str:
        if path not in digests:
            digests[path] = sha256_file(path)
        return digests[path]

    pairs = []
    for path in candidates:
        n = size(path)
        same_size = by_size.get(n, []) if n is not None else []
        match = next((other for other in same_size if digest(other) == digest(path)), None)
        if match is not None:
            pairs.append((path, match))
    return pairs


# --- trials --------------------------------------------------------------------------------------


@dataclass
class Trial:
    """One point of the search space and, once run, its mIoU on the tuning images."""

    index: int
    overrides: dict[str, Any]
    folder: Path
    mIoU: float | None = None
    mAcc: float | None = None
    reused: bool = False
    metrics: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={_show(v)}" for k, v in self.overrides.items()) or "(the defaults)"


def _show(value: Any) -> str:
    return "none" if value is None else str(value)


def _run_key(spec: DatasetSpec, data_root: str | os.PathLike, config: MethodConfig, stems_sha: str,
             limit: int | None) -> str:
    """What a finished run must share with the one asked for to be reused."""
    label_set = config.label_set
    return stable_hash({
        "dataset": spec.name,
        "split": spec.split,
        "images": stems_sha,
        "data_root": str(Path(data_root).resolve()),
        "limit": limit,
        "config": config.model_dump(mode="json", exclude={"text_cache_dir", "device"}),
        "label_set_sha256": sha256_file(label_set) if label_set and Path(label_set).is_file() else None,
        "preset_sha256": sha256_file(config.preset) if config.preset and Path(config.preset).is_file() else None,
    })


def _evaluate(config: MethodConfig, spec: DatasetSpec, data_root: str | os.PathLike, folder: Path, key: str,
              run: runner.RunConfig, backbone: Callable[[], Any], resume: bool, about: dict[str, Any],
              extra_info: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """One evaluate run, or its finished result (no model built); returns metrics.json and whether it was reused.

    A folder holding a run with other settings starts over (its checkpoint would refuse to continue).
    `backbone` builds (or returns the already built) backbone, only when a run is needed.
    """
    done = finished_metrics(folder, TRIAL_FILE, key) if resume else None
    if done is not None:
        return done, True
    if not resume or marker_key(folder, TRIAL_FILE) != key:
        clear_results(folder)
    write_marker(folder, TRIAL_FILE, key, about)
    method = build_method(config, spec.classes, dataset=spec.name, backbone=backbone())
    cfg = run.model_copy(update={"out": str(folder), "resume": resume, "run_name": folder.name})
    return runner.evaluate(method, spec, data_root, cfg, extra_info=extra_info), False


def trial_folder(out: Path, overrides: Mapping[str, Any]) -> Path:
    """trials/<hash of the point>: stable when the search space around it changes."""
    digest = hashlib.sha256(json.dumps(dict(overrides), sort_keys=True, default=str).encode()).hexdigest()[:12]
    return out / "trials" / digest


# --- the preset file -----------------------------------------------------------------------------


def preset_fields(config: MethodConfig) -> dict[str, Any]:
    """The settings of `config` a preset can hold that the user fixed (so the tuned preset carries them)."""
    keys = dict.fromkeys((*DENSE_KEYS, "naclip_std", *PRESET_CONFIG_FIELDS))
    return {key: getattr(config, key) for key in keys if getattr(config, key) is not None}


# keys a preset applies from its `default` block only (one per backbone view, not per dataset)
DEFAULT_ONLY_KEYS = ("dense_mode", "naclip_std")


def tuned_preset(base: MethodConfig, dataset: str, chosen: Mapping[str, Any], name: str, source: str,
                 paper: str) -> dict[str, Any]:
    """A preset file that alone reproduces the chosen trial: `--preset FILE` instead of every option.

    The base preset's numbers, with the settings the user fixed and the chosen ones as this dataset's
    overrides (the dense mode and NACLIP's std, which presets read from `default`, go there). Other
    datasets keep the base preset's numbers; a method without a base preset starts from an empty one.
    """
    preset = base.preset or method_options_of(base).default_preset
    table = load_preset(preset) if preset else PresetFile(name=name, method=base.method, default={})
    fixed = preset_fields(base)
    default = {**table.default, **{k: v for k, v in fixed.items() if k in DEFAULT_ONLY_KEYS}}
    datasets = {ds: dict(values) for ds, values in table.datasets.items()}
    mine = {k: v for k, v in fixed.items() if k not in DEFAULT_ONLY_KEYS}
    datasets[dataset] = {**datasets.get(dataset, {}), **mine, **dict(chosen)}
    document = PresetFile(name=name, paper=paper, method=base.method, default=default, datasets=datasets, source=source)
    return document.model_dump(mode="json")


def final_config(base: MethodConfig, preset_path: Path) -> MethodConfig:
    """The base config with its preset-held settings cleared and the tuned preset file in their place."""
    cleared = dict.fromkeys(preset_fields(base))
    return base.model_copy(update={**cleared, "preset": str(preset_path.resolve())})


# --- the run -------------------------------------------------------------------------------------


def _search_points(space: SearchSpace, search: str, trials: int | None, seed: int, max_trials: int) -> list[dict]:
    if search == "grid":
        if space.size() > max_trials:
            raise ConfigError(
                f"the grid has {space.size()} points, more than --max-trials {max_trials}: narrow --grid, raise "
                f"--max-trials, or sample it with --search random --trials N"
            )
        return space.points()
    if search == "random":
        if trials is None or trials < 1:
            raise ConfigError("--search random needs --trials N (N >= 1)")
        return space.sample(trials, seed)
    raise ConfigError(f"--search must be grid or random, got '{search}'")


def _best(trials: Sequence[Trial]) -> Trial:
    scored = [t for t in trials if t.mIoU is not None]
    if not scored:
        raise TuneError("no trial produced an mIoU on the tuning images (no labelled class in them?)")
    return max(scored, key=lambda t: (t.mIoU, -t.index))  # highest mIoU; a tie: the earlier trial


def tune(
    config: MethodConfig,
    dataset: str | DatasetSpec,
    data_root: str | os.PathLike = "data",
    out: str | os.PathLike = "results/tune",
    *,
    space: SearchSpace | Sequence[str] | None = None,
    tune_split: str = DEFAULT_TUNE_SPLIT,
    tune_images: int | None = DEFAULT_TUNE_IMAGES,
    seed: int = 0,
    search: str = "grid",
    trials: int | None = None,
    max_trials: int = DEFAULT_MAX_TRIALS,
    final: bool = True,
    limit: int | None = None,
    preset_name: str | None = None,
    run: runner.RunConfig | None = None,
    resume: bool = True,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Choose `config`'s free numbers on a held-out split, write them as a preset, evaluate val once.

    `space`: a SearchSpace, `FIELD=V1,V2` strings, or None for `default_space`. `final=False`
    stops after writing the preset (no image of the evaluation split is read). `limit`: only the
    first N images of the evaluation split in the final run. Returns tune.json's content.
    """
    say = echo or (lambda _text: None)
    if preset_name is not None and file_name_problem(preset_name) is not None:  # OUT/NAME.json must stay in OUT
        raise ConfigError(f"--name {preset_name!r} {file_name_problem(preset_name)}: the preset is written as OUT/NAME.json")
    spec = dataset if isinstance(dataset, DatasetSpec) else get_dataset(dataset)
    out = Path(out)
    chosen_space = _chosen_space(config, spec, space)
    points = _search_points(chosen_space, search, trials, seed, max_trials)
    _check_inputs(config, spec, data_root, points, chosen_space, final)
    with hold_folder(out, "tune folder"):  # one tuning run at a time writes into `out`
        # writes out/tune_images.txt once the splits are checked (the first file of the run)
        held_out, stems = tuning_spec(spec, tune_split, data_root, out, tune_images, seed, need_evaluation=final)
        tuning = _Tuning(
            config=config, base=config.model_copy(update={"text_cache_dir": config.text_cache_dir or str(out / "text_cache")}),
            spec=spec, held_out=held_out, tune_split=tune_split, stems=stems, seed=seed, data_root=data_root, out=out,
            engine=(run or runner.RunConfig()).model_copy(update={"limit": None}), resume=resume, say=say,
        )
        say(f"tuning {config.method} on {spec.name} '{tune_split}': {len(stems)} images (seed {seed}), "
            f"{len(points)} trials ({search}) over {', '.join(chosen_space.values)}")
        results = tuning.run_trials(points)
        best = _best(results)
        preset_path = tuning.write_preset(best, len(points), preset_name)
        summary = tuning.summary(search, chosen_space, best, preset_path, results)
        if final:
            summary["final"] = tuning.final_run(best, preset_path, limit)
        atomic_write_json(out / "tune.json", summary)
        atomic_write_text(out / "tune.md", render_markdown(summary))
        return summary


def _chosen_space(config: MethodConfig, spec: DatasetSpec, space: SearchSpace | Sequence[str] | None) -> SearchSpace:
    """The search space asked for (or the default one); a field both fixed in `config` and searched is refused."""
    overridden = sorted(k for k in TUNABLE_FIELDS if getattr(config, k) is not None)
    if isinstance(space, SearchSpace):
        chosen_space = space
    elif space:
        chosen_space = SearchSpace.parse(list(space))
    else:
        chosen_space = default_space(config, spec)
    clash = sorted(set(chosen_space.values) & set(overridden))
    if clash:
        raise ConfigError(f"{', '.join(clash)}: given as a fixed setting and searched; drop one of them")
    return chosen_space


def _check_inputs(config: MethodConfig, spec: DatasetSpec, data_root: str | os.PathLike, points: Sequence[dict],
                  chosen_space: SearchSpace, final: bool) -> None:
    """Every input before a model is built: data of both splits, weights, label set, the search points."""
    if final:
        check_dataset(spec, data_root)
    check_method_inputs(config, spec.classes)
    for point in points:  # a setting the method does not read, or K without a label set: refused now, not at trial N
        check_applicable(MethodConfig.model_validate({**config.model_dump(), **point}))
    if "k" in chosen_space.values and not config.label_set:
        raise ConfigError("--grid k truncates a label set: give one with --label-set")


@dataclass
class _Tuning:
    """What the steps of one tuning run share once its splits are checked: settings, images, engine, backbone."""

    config: MethodConfig  # as given: the tuned preset and tune.json describe it
    base: MethodConfig  # the same, with the run's text cache: what trials and the final run evaluate
    spec: DatasetSpec  # the evaluation split
    held_out: DatasetSpec  # the tuning images (out/tune_images.txt of tune_split)
    tune_split: str
    stems: list[str]
    seed: int
    data_root: str | os.PathLike
    out: Path
    engine: runner.RunConfig
    resume: bool
    say: Callable[[str], None]
    stems_sha: str = field(init=False)
    _built: list[Any] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.stems_sha = hashlib.sha256("\n".join(self.stems).encode()).hexdigest()

    def backbone(self) -> Any:
        """One backbone for every trial and the final run, built on first need."""
        if not self._built:
            self._built.append(load_backbone(self.base))
        return self._built[0]

    def chosen_on(self) -> dict[str, Any]:
        """Where the numbers were chosen: dataset, split and the seeded image subset."""
        return {"dataset": self.spec.name, "split": self.tune_split, "images": len(self.stems), "seed": self.seed,
                "images_sha256": self.stems_sha, "subset_file": SUBSET_FILE}

    def run_trials(self, points: Sequence[dict[str, Any]]) -> list[Trial]:
        """Every point in search order, evaluated on the tuning images (or reused), each result printed."""
        results: list[Trial] = []
        with tqdm(total=len(points), desc=f"tune {self.spec.name}", unit="trial", disable=not self.engine.progress) as bar:
            for index, point in enumerate(points, start=1):  # trials are numbered from 1, as printed
                trial = self._trial(index, point)
                results.append(trial)
                best = _best(results) if any(t.mIoU is not None for t in results) else None
                self.say(f"[{index}/{len(points)}] {trial.label}: mIoU {_show(trial.mIoU)}"
                         + (" (reused)" if trial.reused else "") + (f"; best so far {best.mIoU} ({best.label})" if best else ""))
                bar.update(1)
        return results

    def _trial(self, index: int, point: dict[str, Any]) -> Trial:
        """One trial: the base settings with this point's values, on the tuning images."""
        trial = Trial(index, dict(point), trial_folder(self.out, point))
        trial_config = self.base.model_copy(update=point)
        key = _run_key(self.held_out, self.data_root, trial_config, self.stems_sha, None)
        metrics, trial.reused = _evaluate(
            trial_config, self.held_out, self.data_root, trial.folder, key, self.engine.model_copy(update={"save_vis": 0}),
            self.backbone, self.resume, {"overrides": point, "split": self.tune_split},
            {"tune": {"trial": index, "overrides": point, "split": self.tune_split, "images": len(self.stems)},
             "method_config": trial_config.model_dump(mode="json")},
        )
        trial.mIoU, trial.mAcc, trial.metrics = metrics["mIoU"], metrics["mAcc"], metrics
        return trial

    def write_preset(self, best: Trial, trials: int, preset_name: str | None) -> Path:
        """OUT/<name>.json, the preset file that alone reproduces the best trial; returns its path."""
        config, spec = self.config, self.spec
        name = preset_name or f"{Path(config.preset).stem if config.preset else config.method}-tuned-{spec.name}"
        preset_path = self.out / f"{name}.json"
        source = (f"llmseg tune: chosen on {spec.name} '{self.tune_split}' ({len(self.stems)} images, seed {self.seed}), "
                  f"trial {best.index} of {trials}, mIoU {best.mIoU}; see tune.json beside this file")
        preset = tuned_preset(config, spec.name, best.overrides, name, source,
                              paper=f"tuned by llmseg on {spec.name} {self.tune_split}")
        atomic_write_json(preset_path, preset)
        self.say(f"chose {best.label} (mIoU {best.mIoU} on {self.tune_split}); wrote {preset_path}")
        return preset_path

    def summary(self, search: str, chosen_space: SearchSpace, best: Trial, preset_path: Path,
                results: Sequence[Trial]) -> dict[str, Any]:
        """tune.json without the final run: the search, where and what was chosen, every trial."""
        out = self.out
        return {
            "units": "percent",
            "dataset": self.spec.name,
            "method": self.config.method,
            "base_config": self.config.model_dump(mode="json"),
            "search": {"kind": search, "space": {k: list(v) for k, v in chosen_space.values.items()},
                       "trials": len(results), "seed": self.seed},
            "chosen_on": self.chosen_on(),
            "chosen": {"trial": best.index, "overrides": best.overrides, "mIoU": best.mIoU, "folder": _rel(best.folder, out)},
            "preset": _rel(preset_path, out),
            "trials": [{"trial": t.index, "overrides": t.overrides, "mIoU": t.mIoU, "mAcc": t.mAcc,
                        "reused": t.reused, "folder": _rel(t.folder, out)} for t in results],
            "final": None,
        }

    def final_run(self, best: Trial, preset_path: Path, limit: int | None) -> dict[str, Any]:
        """The evaluation split, evaluated once through the tuned preset file; tune.json's `final` entry."""
        spec = self.spec
        last = final_config(self.base, preset_path)
        folder = self.out / "final"
        key = _run_key(spec, self.data_root, last, "all", limit)
        self.say(f"final: {spec.name} '{spec.split}' once, with {preset_path.name}")
        metrics, reused = _evaluate(
            last, spec, self.data_root, folder, key, self.engine.model_copy(update={"limit": limit}), self.backbone,
            self.resume, {"final": True, "split": spec.split},
            {"tune": {"final": True, "chosen_on": self.chosen_on(), "chosen": best.overrides},
             "method_config": last.model_dump(mode="json")},
        )
        result = {"split": spec.split, "mIoU": metrics["mIoU"], "mAcc": metrics["mAcc"], "aAcc": metrics["aAcc"],
                  "num_images": metrics["num_images"], "reused": reused, "metrics": _rel(folder / "metrics.json", self.out)}
        self.say(f"{spec.name} '{spec.split}': mIoU {metrics['mIoU']} with the settings chosen on '{self.tune_split}'")
        return result


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def render_markdown(summary: Mapping[str, Any]) -> str:
    """tune.md: the choice and where it was made, the final numbers, every trial best first."""
    on = summary["chosen_on"]
    chosen = summary["chosen"]
    fields = list(summary["search"]["space"])
    lines = ["# llmseg tune", "",
             f"Method `{summary['method']}` on {summary['dataset']}. Settings chosen on the **{on['split']}** split "
             f"({on['images']} images drawn with seed {on['seed']}, listed in `{on['subset_file']}`), never on the "
             "evaluation split; mIoU in percent.", ""]
    final = summary.get("final")
    lines += [f"- chosen: {', '.join(f'{k}={_show(v)}' for k, v in chosen['overrides'].items())} "
              f"(trial {chosen['trial']}, mIoU {_show(chosen['mIoU'])} on {on['split']})",
              f"- preset file: `{summary['preset']}` (use it with `--preset`)"]
    if final:
        lines.append(f"- **{final['split']}: mIoU {_show(final['mIoU'])}**, mAcc {_show(final['mAcc'])}, "
                     f"aAcc {_show(final['aAcc'])} on {final['num_images']} images, evaluated once with that preset")
    else:
        lines.append("- the evaluation split was not evaluated (--no-final)")
    lines += ["", f"## Trials ({summary['search']['kind']}, {summary['search']['trials']} points), best first", "",
              "| trial | " + " | ".join(fields) + f" | mIoU ({on['split']}) |", "|---:|" + "---:|" * (len(fields) + 1)]
    ordered = sorted(summary["trials"], key=lambda t: (-(t["mIoU"] if t["mIoU"] is not None else -1.0), t["trial"]))
    for t in ordered:
        mark = "**" if t["trial"] == chosen["trial"] else ""
        cells = [_show(t["overrides"].get(f)) for f in fields]
        lines.append(f"| {mark}{t['trial']}{mark} | " + " | ".join(cells) + f" | {mark}{_show(t['mIoU'])}{mark} |")
    return "\n".join(lines) + "\n"
