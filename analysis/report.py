"""Papermill reports (issue 4): being written; registers no command yet."""

from __future__ import annotations

import argparse


def add_report_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``report`` on the CLI's subparsers (nothing yet)."""
