"""Asking one class until it answers usably: a repair turn after an unusable answer, and after a clash.

`solve` asks a class until its answer gives exactly K clean subclasses; `repair_clash` asks it
again, naming the subclasses it shares with other classes (`find_clashes`). Both go through a
`Session`, which replays answers from the cache or requests them; `generate` runs them over all
classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .answers import judge_answer, shown_answer
from .session import ClassFailed, RunStopped, Session

STOPPED = "not finished: the run stopped"  # the reason of a class the run stopped before it finished


@dataclass
class Outcome:
    """What one class's asking gave: its subclasses (None: no usable answer, `reason` says why) and how many answers it took."""

    subclasses: list[str] | None
    answers: int
    reason: str | None = None
    messages: list[dict[str, str]] | None = None  # the conversation that gave `subclasses` (for a clash repair)
    text: str | None = None  # the answer text


def find_clashes(subclasses: dict[str, list[str]]) -> dict[str, list[str]]:
    """{subclass (lower-cased): [classes that gave it]} for every subclass more than one class gave.

    Why: a name shared by several classes cannot tell them apart, so it is useless for segmentation.
    """
    owners: dict[str, list[str]] = {}
    for class_name, names in subclasses.items():
        for name in {n.strip().lower() for n in names}:
            owners.setdefault(name, []).append(class_name)
    return {name: classes for name, classes in sorted(owners.items()) if len(classes) > 1}


def clash_problem(class_name: str, clashes: dict[str, list[str]]) -> str:
    """The repair turn's problem text for one class: which of its subclasses other classes also gave."""
    parts = [
        f"'{name}' (also given for {', '.join(repr(c) for c in classes if c != class_name)})"
        for name, classes in clashes.items() if class_name in classes
    ]
    return (
        "these subclasses are also given for other classes, so they cannot tell the classes apart: "
        + "; ".join(parts) + f". Replace them with subclasses that belong to '{class_name}' only."
    )


def _repair_turns(session: Session, class_name: str, messages: list[dict[str, str]], shown: str, problem: str) -> list[dict[str, str]]:
    """The conversation so far, the answer as shown, and the repair message naming `problem`."""
    repair = session.template.render_repair(class_name, session.k, problem, session.domain, session.other_classes_for(class_name))
    return [*messages, {"role": "assistant", "content": shown}, {"role": "user", "content": repair}]


def solve(session: Session, class_name: str) -> Outcome:
    """Ask one class until its answer gives exactly K clean subclasses (a repair turn per unusable answer)."""
    messages = session.first_messages(class_name)
    problem = ""
    tries = session.max_retries + 1
    for answer_index in range(tries):
        try:
            record = session.ask(class_name, messages, answer_index)
        except ClassFailed as exc:
            return Outcome(None, answer_index, str(exc))
        except RunStopped as exc:
            return Outcome(None, answer_index, f"{STOPPED} ({exc})")
        subclasses, problem = judge_answer(record, class_name, session.k, session.classes, session.max_answer_chars)
        if subclasses is not None:
            return Outcome(subclasses, answer_index + 1, messages=messages, text=record["text"])
        if answer_index < session.max_retries:
            session.stats.add(reasks=1)
            messages = _repair_turns(session, class_name, messages, shown_answer(record, session.max_answer_chars), problem)
    return Outcome(None, tries, f"no usable answer in {tries} tries, last: {problem}")


def repair_clash(session: Session, class_name: str, previous: Outcome, clashes: dict[str, list[str]]) -> Outcome:
    """Ask one class again, naming the subclasses it shares with other classes (a repair turn)."""
    messages = _repair_turns(session, class_name, previous.messages or [], previous.text or "", clash_problem(class_name, clashes))
    session.stats.add(reasks=1)
    answer_index = previous.answers
    try:
        record = session.ask(class_name, messages, answer_index)
    except ClassFailed as exc:
        return Outcome(None, answer_index + 1, str(exc))
    except RunStopped as exc:
        return Outcome(None, answer_index + 1, f"{STOPPED} ({exc})")
    subclasses, _ = judge_answer(record, class_name, session.k, session.classes, session.max_answer_chars)
    if subclasses is None:  # an unusable repair keeps the earlier answer; the clash check decides
        return Outcome(previous.subclasses, answer_index + 1, messages=messages, text=shown_answer(record, session.max_answer_chars))
    return Outcome(subclasses, answer_index + 1, messages=messages, text=record["text"])
