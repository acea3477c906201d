"""The README's command-line reference and --help tell the same story: every flag of
every subcommand has help text and appears in the README's "Command line" section."""

from __future__ import annotations

import argparse
from pathlib import Path

from cwndproxy.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[3]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = sub
                for inner, inner_parser in _subcommands(sub).items():
                    out[f"{name} {inner}"] = inner_parser
    return out


def _flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)
    ]


def test_every_flag_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    missing_help, missing_docs = [], []
    for name, sub in _subcommands(build_parser()).items():
        for action in _flags(sub):
            flag = max(action.option_strings, key=len)
            if not action.help or action.help == argparse.SUPPRESS:
                missing_help.append(f"{name} {flag}")
            if (
                f"`{flag}" not in section
                and f" {flag}" not in section
                and f"[{flag}" not in section
            ):
                missing_docs.append(f"{name} {flag}")
    assert missing_help == [], "flags without help text"
    assert missing_docs == [], "flags missing from the README's Command line section"
