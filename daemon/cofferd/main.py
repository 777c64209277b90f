"""``cofferd``: the daemon's entry point."""

from __future__ import annotations

import argparse

from cofferd import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cofferd", description="The coffer device daemon.")
    parser.add_argument("--version", action="version", version=f"cofferd {__version__}")
    parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
