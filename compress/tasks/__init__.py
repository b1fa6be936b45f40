"""The task registry: a recipe's ``task.type`` names one :class:`TaskDefinition`, and everything that depends on the
task (the recipe schema, the pipeline, the estimate, the service's file checks and upload purposes, the export, the
docs) reads it from here. Torch-free.

    from compress import tasks
    tasks.get("navigation").roles      # {"train": Role(purpose="trajectories", required=False)}
    tasks.register(definition)          # a new task: the recipe schema accepts its type at once

Built in: language_model, sequence_tagging, navigation, adding (one module each in this package). An unknown type is
an error that names the known ones (:class:`UnknownTask`), never a fallback.
"""

from __future__ import annotations

from collections.abc import Callable

from compress.tasks.base import Metric, Purpose, Role, StrictModel, TaskDefinition

__all__ = [
    "GENERAL_PURPOSES",
    "Metric",
    "Purpose",
    "Role",
    "StrictModel",
    "TaskDefinition",
    "UnknownTask",
    "definitions",
    "get",
    "known",
    "on_change",
    "purposes",
    "register",
    "unregister",
    "validate",
]

# Purposes every task may use, validated by compress.weights: an init_from checkpoint and the vocabulary its rows follow
GENERAL_PURPOSES = ("weights", "vocabulary")

_registry: dict[str, TaskDefinition] = {}
_listeners: list[Callable[[], None]] = []


class UnknownTask(ValueError):
    def __init__(self, name: object) -> None:
        super().__init__(f"unknown task type {name!r}; the known ones are {', '.join(known())}")


def register(definition: TaskDefinition, *, replace: bool = False) -> TaskDefinition:
    """Add a task (or, with ``replace``, redefine one); the recipe schema follows at once."""
    if definition.type in _registry and not replace:
        raise ValueError(f"task {definition.type!r} is already registered")
    for purpose in definition.purposes:
        owner = _purpose_owner(purpose.name)
        if purpose.name in GENERAL_PURPOSES or (owner is not None and owner.type != definition.type):
            raise ValueError(f"task {definition.type!r}: purpose {purpose.name!r} is already defined")
    _registry[definition.type] = definition
    _changed()
    return definition


def unregister(name: str) -> None:
    if _registry.pop(name, None) is not None:
        _changed()


def get(name: str) -> TaskDefinition:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownTask(name) from None


def known() -> tuple[str, ...]:
    return tuple(_registry)


def definitions() -> tuple[TaskDefinition, ...]:
    return tuple(_registry.values())


def purposes() -> dict[str, Purpose | None]:
    """Every upload purpose, in order: the tasks' own (with their validators), then the general ones (None: the
    service validates those with compress.weights)."""
    found: dict[str, Purpose | None] = {}
    for definition in _registry.values():
        for purpose in definition.purposes:
            found[purpose.name] = purpose
    return found | dict.fromkeys(GENERAL_PURPOSES)


def validate(purpose: str, path):
    """Validate a data file for one of the tasks' purposes (a compress.data.Validation)."""
    found = purposes()
    if found.get(purpose) is None:
        data = [name for name, entry in found.items() if entry is not None]
        raise ValueError(f"purpose must be one of {data}, got {purpose!r}")
    return found[purpose].validate(path)


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever a task is registered or removed (compress.spec rebuilds the recipe's union)."""
    _listeners.append(listener)


def _purpose_owner(name: str) -> TaskDefinition | None:
    return next((d for d in _registry.values() if any(p.name == name for p in d.purposes)), None)


def _changed() -> None:
    for listener in _listeners:
        listener()


def _register_builtins() -> None:
    from compress.tasks import adding, language_model, navigation, sequence_tagging

    for module in (language_model, sequence_tagging, navigation, adding):
        register(module.TASK)


_register_builtins()
