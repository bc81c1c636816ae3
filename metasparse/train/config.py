"""Run configurations as dataclasses: command-line flags, ``--config FILE`` and overrides from one definition.

Each field of a config dataclass becomes a flag (``lambda1_ratio`` -> ``--lambda1-ratio``) whose help is
the field's ``metadata["help"]`` followed by its default. Values are resolved as defaults, then the JSON
``--config`` file (a run's ``config.json`` works), then the flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["add_config_arguments", "config_from_args", "config_from_dict", "option"]

ConfigT = TypeVar("ConfigT")


def option(default: Any, help: str, choices: tuple[Any, ...] | None = None) -> Any:
    """A config field with its help text (and allowed values), for `add_config_arguments`.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass(frozen=True)
        ... class Config:
        ...     lr: float = option(0.1, "learning rate")
        >>> dataclasses.fields(Config)[0].metadata["help"]
        'learning rate'
    """
    metadata = {"help": help, "choices": choices}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return dataclasses.field(default=default, metadata=metadata)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> tuple[type, bool]:
    """``(element type, is_tuple)`` of an annotation: ``int``, ``float | None``, ``tuple[float, ...]``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _base_type(members[0])
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0], True
    return annotation, False


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """Add ``--config FILE`` and one flag per field of ``config_class`` to ``parser``.

    Flags default to ``None`` (meaning: not given), so `config_from_args` can tell an explicit flag from
    a default; the real default is printed in the help.

    Example:
        >>> from metasparse.train import FewShotConfig
        >>> parser = argparse.ArgumentParser()
        >>> add_config_arguments(parser, FewShotConfig)
        >>> "--lambda1-ratio" in parser.format_help()
        True
    """
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="JSON file of settings (e.g. a run's config.json); flags given here override it")
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        kind, is_tuple = _base_type(hints[field.name])
        help_text = f"{field.metadata.get('help', '')} (default: {field.default!r})"
        kwargs: dict[str, Any] = {"default": None, "help": help_text, "dest": field.name}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = field.name.upper()
            if is_tuple:
                kwargs["nargs"] = "+"
            if field.metadata.get("choices"):
                kwargs["choices"] = field.metadata["choices"]
                kwargs.pop("metavar")
        parser.add_argument(_flag(field.name), **kwargs)


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"--config: no file at {path}")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--config: {path} is not valid JSON ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config: {path} must hold a mapping of settings, got {type(values).__name__}")
    return values


def config_from_args(config_class: type[ConfigT], args: argparse.Namespace) -> ConfigT:
    """Build ``config_class`` from defaults, then ``args.config`` (a file), then explicit flags.

    Raises:
        ValueError: For a missing or malformed file, or a key the config does not have (named).

    Example:
        >>> from metasparse.train import FewShotConfig
        >>> parser = argparse.ArgumentParser()
        >>> add_config_arguments(parser, FewShotConfig)
        >>> config_from_args(FewShotConfig, parser.parse_args(["--head", "svm", "--steps", "10"])).steps
        10
    """
    names = {field.name for field in dataclasses.fields(config_class)}
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        from_file = _read_config_file(Path(args.config))
        unknown = sorted(set(from_file) - names)
        if unknown:
            raise ValueError(f"--config: unknown settings {unknown} in {args.config}; known: {sorted(names)}")
        values.update(from_file)
    values.update({name: getattr(args, name) for name in names if getattr(args, name, None) is not None})
    return config_from_dict(config_class, values)


def config_from_dict(config_class: type[ConfigT], values: dict[str, Any]) -> ConfigT:
    """Build ``config_class`` from JSON values (e.g. a run's ``config.json``): lists become tuples.

    Example:
        >>> from metasparse.train import FewShotConfig
        >>> config_from_dict(FewShotConfig, {"lr_milestones": [0.5], "lr_factors": [0.1]}).lr_milestones
        (0.5,)
    """
    hints = typing.get_type_hints(config_class)
    return config_class(**{name: tuple(value) if isinstance(value, list) and _base_type(hints[name])[1]
                           else value for name, value in values.items()})
