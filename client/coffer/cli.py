"""``coffer``: the command-line client of cofferd."""

from __future__ import annotations

import argparse

from coffer import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coffer", description="Talk to the cofferd daemon.")
    parser.add_argument("--version", action="version", version=f"coffer {__version__}")
    parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
