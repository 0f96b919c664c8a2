"""One study skeleton: the command line of a study is built from its frozen `Config`.

A study is a frozen dataclass ``Config``, a ``main(cfg)`` and this module's `study_app`
(or `run_study`), so an option is written once, as a Config field with its default, and
not three times (field, typer option, Config call)::

    @dataclass(frozen=True, kw_only=True)
    class Config:
        seeds: int = field(default=1, metadata={"help": "seeds 0 .. seeds-1"})
        methods: tuple[str, ...] = ("rmse", "task")

    app = study_app(Config, main, demo=dict(seeds=1))   # `gridlearn run NAME` needs `app`
    if __name__ == "__main__":
        app()

Field types understood: ``str``, ``int``, ``float``, ``bool`` (``--x/--no-x``),
``tuple[str | int | float, ...]`` (comma-separated on the command line) and any of those
``| None`` (the option may be left out). ``demo``: a preset that ``--demo`` applies over
the options given (the quick settings of ``make demo``).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import sys
import types
import typing
from typing import Any, Callable

import typer

from gridlearn.errors import ConfigError

_SCALARS = (str, int, float, bool)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return tp, False


def _option_kind(name: str, tp: Any) -> tuple[type, type | None, bool]:
    """(type typer parses, element type of a tuple field or None, optional)."""
    tp, optional = _unwrap_optional(tp)
    if tp in _SCALARS:
        return tp, None, optional
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in (str, int, float):
            return str, args[0], optional
    raise ConfigError(f"Config field {name!r}: type {tp!r} has no command-line form (use str, int, float, bool or tuple[...])")


def _split(text: str, element: type) -> tuple:
    try:
        return tuple(element(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: {exc}") from None


def _resolve(main: Callable) -> Callable:
    # Looked up at call time in the study's module, so that a test may replace `main` there.
    module = sys.modules.get(getattr(main, "__module__", ""), None)
    return getattr(module, getattr(main, "__name__", ""), main) if module is not None else main


def study_app(config_cls: type, main: Callable[[Any], Any], demo: dict[str, Any] | None = None, help: str | None = None,
              echo: bool = False) -> typer.Typer:
    """A typer application with one option per field of ``config_cls`` that calls ``main(Config(...))``.

    ``echo``: log at INFO level while ``main`` runs and print what it returns (the studies
    whose ``main`` returns their results dict)."""
    if not dataclasses.is_dataclass(config_cls):
        raise ConfigError(f"{config_cls!r} is not a dataclass")
    hints = typing.get_type_hints(config_cls)
    params, converters = [], {}
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            raise ConfigError(f"Config field {f.name!r} needs a default to become a command-line option")
        parsed, element, optional = _option_kind(f.name, hints[f.name])
        if element is not None:
            converters[f.name] = element
            default = ",".join(str(v) for v in default) if default is not None else None
        annotation = typing.Optional[parsed] if (optional or default is None) else parsed
        option = typer.Option(default, help=f.metadata.get("help", ""), show_default=default is not None)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    if demo is not None:
        unknown = sorted(set(demo) - {p.name for p in params})
        if unknown:
            raise ConfigError(f"demo preset names fields {unknown} that {config_cls.__name__} does not have")
        params.append(inspect.Parameter("demo", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                        default=typer.Option(False, help="the quick demo settings (override the options above)")))

    def command(**kwargs: Any) -> None:
        use_demo = kwargs.pop("demo", False)
        for name, element in converters.items():
            if kwargs[name] is not None:
                kwargs[name] = _split(kwargs[name], element)
        if use_demo:
            kwargs.update(demo or {})
        try:
            cfg = config_cls(**kwargs)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from None
        if echo:
            logging.basicConfig(level=logging.INFO)
        out = _resolve(main)(cfg)
        if echo:
            typer.echo(out)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = (main.__doc__ or "").strip() or None
    app = typer.Typer(add_completion=False, help=help)
    app.command()(command)
    return app


def run_study(config_cls: type, main: Callable[[Any], Any], demo: dict[str, Any] | None = None, argv: list[str] | None = None) -> None:
    """Build `study_app` and run it on ``argv`` (default: the process's arguments)."""
    study_app(config_cls, main, demo=demo)(args=argv)
