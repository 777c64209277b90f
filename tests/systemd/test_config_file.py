"""The packaged config file: every setting, each at its default, all commented out."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from cofferd.settings import Settings

SETTING = re.compile(r"#[a-z_]+ = ")
CONFIG = Path(__file__).resolve().parents[2] / "systemd/cofferd.toml"


def test_as_shipped_it_changes_nothing() -> None:
    assert tomllib.loads(CONFIG.read_text()) == {}
    assert Settings.load(config_file=CONFIG, environ={}) == Settings()


def test_it_names_every_setting_at_its_default() -> None:
    lines = [line[1:] for line in CONFIG.read_text().splitlines() if SETTING.match(line)]
    values = tomllib.loads("\n".join(lines))
    assert set(values) == {f.name for f in dataclasses.fields(Settings)}
    # docker_host's default is "unset": the file shows the usual socket instead.
    assert values.pop("docker_host") == "unix:///run/docker.sock"
    assert Settings.from_mapping(values) == Settings()
