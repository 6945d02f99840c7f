"""Command-line arguments: a parser built from dataclasses (the run_flax_ner.py ones are in
``flaxtrainer.config.job_args``).

`DataclassArgumentParser` turns dataclass fields into flags (`--name` and `--name-with-dashes`,
help from `metadata["help"]`), reads a JSON/YAML config file given as the first argument, and
reports every mistake as a `UserError` (one message plus a hint) instead of argparse's usage
dump. It behaves like Hugging Face's `HfArgumentParser`: booleans accept `--flag`,
`--flag true|false` and `--no_flag`; a field shared by several dataclasses (e.g. `seed`) is one
flag whose value goes to each of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import json
import shutil
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from flaxtrainer.config.job_args import IGNORED_FLAGS, REFUSED_FLAGS
from flaxtrainer.errors import UserError, one_line, parse_json

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
_MISSING = object()  # default of a field that has none: reported as a missing required flag


def string_to_bool(value: str | bool) -> bool:
    """Parse `true/false/yes/no/1/0` (any case) as HfArgumentParser does."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("yes", "true", "t", "y", "1"):
        return True
    if lowered in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written; help columns sized for terminals 80 to 100 wide."""

    def __init__(self, prog: str) -> None:
        width = min(max(shutil.get_terminal_size().columns, 80), 100)
        super().__init__(prog, max_help_position=34, width=width)


def _metavar(name: str, tp: Any) -> str:
    """A short placeholder for --help: PATH, N, X or TEXT."""
    if name.endswith(("_file", "_dir", "_path", "_or_path")):
        return "PATH"
    tp = _unwrap_optional(tp)
    item = typing.get_args(tp)[0] if typing.get_origin(tp) in (list, tuple) else tp
    return {int: "N", float: "X"}.get(item, "TEXT")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises `UserError` (with a did-you-mean hint) instead of exiting."""

    def error(self, message: str) -> typing.NoReturn:
        hint = f"run `{self.prog} --help` for the list of flags"
        if message.startswith("unrecognized arguments:"):
            unknown = [a for a in message.split(":", 1)[1].split() if a.startswith("--")]
            known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            for flag in unknown:
                close = difflib.get_close_matches(flag.split("=", 1)[0], known, n=1)
                if close:
                    hint = f"did you mean {close[0]}? ({hint})"
                    break
        raise UserError(message, hint)


@dataclasses.dataclass(frozen=True)
class _FieldSpec:
    """How one flag's value is converted (from argv or a config file), and its default."""

    convert: Callable[[Any], Any]
    default: Any
    is_list: bool
    repeatable: bool = False  # a flag given several times gives a list (one time: the value)


class _Repeatable(argparse.Action):
    """A flag that may be repeated (metadata `repeatable`): given once, its value as usual;
    given again, the list of every value in order."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        previous = getattr(namespace, self.dest, None)
        if previous is None:
            setattr(namespace, self.dest, values)
        else:
            earlier = previous if isinstance(previous, list) else [previous]
            setattr(namespace, self.dest, [*earlier, values])


def _unwrap_optional(tp: Any) -> Any:
    """`X | None` / `Optional[X]` -> X (other unions are left as they are)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _converter(name: str, tp: Any) -> tuple[Callable[[Any], Any], bool, bool, tuple | None]:
    """(convert, is_bool, is_list, choices) for a field type; convert accepts str or native."""
    tp = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if tp is bool:
        return string_to_bool, True, False, None
    if origin is Literal:
        choices = typing.get_args(tp)
        return _choice(name, choices), False, False, choices
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        choices = tuple(member.value for member in tp)
        return _choice(name, choices), False, False, choices
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (str,)
        item_convert, _, _, _ = _converter(name, item)
        return item_convert, False, True, None
    if origin is dict or tp is dict:
        return _json_value, False, False, None
    if tp in (int, float, str):
        return _scalar(tp), False, False, None
    return _scalar(str), False, False, None


def _scalar(tp: type) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, tp) and not isinstance(value, bool):
            return value
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and tp in (int, float):
            try:
                return tp(value)
            except ValueError:
                pass
        expected = {int: "an integer", float: "a number", str: "a string"}[tp]
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")

    return convert


def _choice(name: str, choices: tuple[Any, ...]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        for choice in choices:
            if value == choice or str(value) == str(choice):
                return choice
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(map(str, choices))}, got {value!r}"
        )

    return convert


def _json_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON value, got {value!r} ({exc})") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML file holding one mapping of option name -> value."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"config file {path} does not exist",
            "give the path of a .json or .yaml file holding the options, e.g. "
            "examples/wnut16_demo.json",
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        hint = "the file must hold one JSON object of option names and values"
        data = parse_json(text, str(path), hint)
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except Exception as exc:  # yaml.YAMLError: message already names line and column
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"{path}: not valid YAML ({first})", "the file must hold one mapping of options"
            ) from None
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: expected a mapping of option names to values, got {type(data).__name__}",
            'write e.g. {"model_name_or_path": "...", "output_dir": "...", "do_train": true}',
        )
    return data


class DataclassArgumentParser:
    """Builds flags from dataclasses and parses argv (or a config file + flags) into them."""

    def __init__(
        self,
        dataclass_types: Sequence[type],
        *,
        prog: str = "flaxtrainer",
        usage: str | None = None,
        description: str | None = None,
        epilog: str | None = None,
        group_titles: Sequence[str] | None = None,
        ignored_flags: Mapping[str, tuple[type, str]] | None = None,
        config_file_first: bool = True,
    ) -> None:
        self.dataclass_types = list(dataclass_types)
        self.config_file_first = config_file_first
        self.specs: dict[str, _FieldSpec] = {}
        self.ignored = {
            name: spec
            for name, spec in (IGNORED_FLAGS if ignored_flags is None else ignored_flags).items()
        }
        self.parser = _ArgumentParser(
            prog=prog,
            usage=usage,
            description=description,
            epilog=epilog,
            formatter_class=_HelpFormatter,
            allow_abbrev=False,
        )
        titles = list(group_titles or [])
        for index, cls in enumerate(self.dataclass_types):
            title = titles[index] if index < len(titles) else cls.__name__
            group = self.parser.add_argument_group(title)
            hints = typing.get_type_hints(cls)
            for field in dataclasses.fields(cls):
                if not field.init:
                    continue
                if field.name in self.specs:  # shared field: one flag feeds every owner
                    continue
                self._add_field(group, field, hints[field.name])
        self.refused = dict(REFUSED_FLAGS) if ignored_flags is None else {}
        self.ignored.update({name: (tp, msg) for name, (tp, msg, _) in self.refused.items()})
        self.ignored = {k: v for k, v in self.ignored.items() if k not in self.specs}
        if self.ignored:
            group = self.parser.add_argument_group(
                "accepted for compatibility with run_flax_ner.py, ignored"
            )
            for name, (tp, why) in self.ignored.items():
                convert, is_bool, _, _ = _converter(name, tp)
                kwargs: dict[str, Any] = {
                    "type": convert,
                    "default": None,
                    "help": f"Refused: {why}." if name in self.refused else f"Ignored: {why}.",
                }
                if is_bool:
                    kwargs.update(nargs="?", const=True, metavar="{true,false}")
                else:
                    kwargs["metavar"] = _metavar(name, tp)
                self._add_flag(group, name, **kwargs)

    @staticmethod
    def _add_flag(group: Any, name: str, *, prefix: str = "", **kwargs: Any) -> None:
        """`--name` as documented, plus a `--name-with-dashes` alias kept out of --help."""
        group.add_argument(f"--{prefix}{name}", **kwargs)
        if "_" in name or "_" in prefix:
            kwargs["help"] = argparse.SUPPRESS
            group.add_argument(f"--{prefix}{name}".replace("_", "-"), **kwargs)

    def _add_field(self, group: Any, field: dataclasses.Field, tp: Any) -> None:
        convert, is_bool, is_list, choices = _converter(field.name, tp)
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = _MISSING
        help_text = str(field.metadata.get("help", "")).strip()
        repeatable = bool(field.metadata.get("repeatable"))
        self.specs[field.name] = _FieldSpec(convert, default, is_list, repeatable)

        shown = help_text
        if default is _MISSING:
            shown += " (required)"
        elif default not in (None, False, "", []) and not isinstance(default, enum.Enum):
            shown += f" (default: {default})"
        elif isinstance(default, enum.Enum):
            shown += f" (default: {default.value})"
        kwargs: dict[str, Any] = {"dest": field.name, "type": convert, "help": shown}
        kwargs["default"] = argparse.SUPPRESS  # so that "given" is distinguishable from default
        kwargs["metavar"] = _metavar(field.name, tp)
        if choices is not None:
            kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "}"
        if is_bool:
            kwargs.update(nargs="?", const=True, metavar="{true,false}")
        elif is_list:
            kwargs["nargs"] = "+"
        if repeatable:
            kwargs["action"] = _Repeatable
        self._add_flag(group, field.name, **kwargs)
        if is_bool and default is True:
            self._add_flag(
                group,
                field.name,
                prefix="no_",
                dest=field.name,
                action="store_false",
                default=argparse.SUPPRESS,
                help=f"Turn off --{field.name}.",
            )

    # -- parsing ---------------------------------------------------------------------------

    def split_config(self, argv: Sequence[str]) -> tuple[dict[str, Any], list[str], Path | None]:
        """Take a leading config file off argv: (options from it, remaining argv, its path)."""
        argv = list(argv)
        if (
            self.config_file_first
            and argv
            and not argv[0].startswith("-")
            and argv[0].lower().endswith(CONFIG_SUFFIXES)
        ):
            path = Path(argv[0])
            return load_config_file(path), argv[1:], path
        return {}, argv, None

    def _convert_config(self, config: Mapping[str, Any], source: Path | None) -> dict[str, Any]:
        where = str(source) if source else "config"
        known = list(self.specs) + list(self.ignored)
        values: dict[str, Any] = {}
        for key, value in config.items():
            name = str(key).lstrip("-").replace("-", "_")
            spec = self.specs.get(name)
            if spec is None and name not in self.ignored:
                close = difflib.get_close_matches(name, known, n=1)
                raise UserError(
                    f"{where}: unknown option '{key}'",
                    f"did you mean '{close[0]}'?" if close else f"see `{self.parser.prog} --help`",
                )
            convert = spec.convert if spec else _converter(name, self.ignored[name][0])[0]
            try:
                if value is None:
                    values[name] = None
                elif spec is not None and spec.is_list:
                    items = value if isinstance(value, list) else [value]
                    values[name] = [convert(item) for item in items]
                elif spec is not None and spec.repeatable and isinstance(value, list):
                    values[name] = [convert(item) for item in value]
                else:
                    values[name] = convert(value)
            except argparse.ArgumentTypeError as exc:
                raise UserError(
                    f"{where}: option '{key}': {exc}", f"see `{self.parser.prog} --help`"
                ) from None
        return values

    def parse(
        self, argv: Sequence[str], *, defaults: Mapping[str, Any] | None = None
    ) -> tuple[list[Any], set[str]]:
        """Parse argv into one instance per dataclass; also returns the names given explicitly.

        A leading `.json`/`.yaml` argument is read as a config file; flags after it override
        its values. `defaults` (e.g. a command's own presets) sit below both.
        """
        config, rest, source = self.split_config(argv)
        values: dict[str, Any] = dict(defaults or {})
        from_config = self._convert_config(config, source)
        values.update(from_config)
        namespace = self.parser.parse_args(rest)
        given_flags = vars(namespace)
        values.update(given_flags)
        given = set(from_config) | {k for k in given_flags if k in self.specs}

        for name in self.ignored:
            value = values.pop(name, None)
            if value is None:  # argparse's default None hides a config file's value
                value = from_config.get(name)
            if value not in (None, False) and name in self.refused:
                raise UserError(self.refused[name][1], self.refused[name][2])
            if value not in (None, False):
                why = self.ignored[name][1]
                print(
                    f"notice: --{name} is accepted for compatibility and ignored: {why}.",
                    file=sys.stderr,
                )

        missing = [n for n, s in self.specs.items() if s.default is _MISSING and n not in values]
        if missing:
            flags = " ".join(f"--{n}" for n in missing)
            raise UserError(f"missing required {flags}", f"see `{self.parser.prog} --help`")

        instances = []
        for cls in self.dataclass_types:
            # fields not given keep their dataclass default (each owner its own)
            kwargs = {
                f.name: values[f.name]
                for f in dataclasses.fields(cls)
                if f.init and f.name in values
            }
            try:
                instances.append(cls(**kwargs))
            except (ValueError, TypeError) as exc:
                raise UserError(one_line(str(exc)), f"see `{self.parser.prog} --help`") from None
        return instances, given
