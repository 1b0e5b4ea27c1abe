"""Argument types and the arguments several commands share (a TARGET, an output format)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from mltask_operator.cli.targets import parse_target

T = TypeVar("T")


def arg_type(parse: Callable[[str], T], metavar: str) -> Callable[[str], T]:
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = metavar  # argparse names the type in its message
    return convert


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, not {value}")
    return value


def target_argument(p: argparse.ArgumentParser, metavar: str = "TARGET") -> None:
    """NAME (an MLTask) or pipeline/NAME."""
    p.add_argument("target", type=arg_type(parse_target, "target"), metavar=metavar)


def task_argument(p: argparse.ArgumentParser) -> None:
    target_argument(p, "NAME")


def output_arguments(p: argparse.ArgumentParser) -> None:
    task_argument(p)
    p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
