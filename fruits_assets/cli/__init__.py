"""The `fruits` command line: parsing and dispatch (`main`), `fruits run` (`run`) and `fruits predict` (`predict`).
It may import every other room; nothing imports it."""

from fruits_assets.cli.main import main

__all__ = ["main"]
