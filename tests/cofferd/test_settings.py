"""Settings: defaults ← TOML config file ← environment, checked, built without globals."""

from __future__ import annotations

from pathlib import Path

import pytest

from cofferd.errors import SettingsError
from cofferd.settings import DEFAULT_SOCKET, Settings


def test_defaults_when_nothing_is_given(tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("")
    settings = Settings.load(config, {})
    assert settings == Settings()
    assert settings.socket_path == DEFAULT_SOCKET
    assert settings.inline_max_bytes == 4 * 1024 * 1024


def test_file_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "cofferd.toml"
    config.write_text(
        'upstream_url = "https://file.example"\n'
        'cache_dir = "/from/file"\n'
        "shutdown_grace = 3.5\n"
        "inline_max_bytes = 100\n"
    )
    env = {
        "COFFER_UPSTREAM_URL": "https://env.example",
        "COFFER_SOCKET": "/run/x/s.sock",
        "COFFER_ARCHIVE_PATH": "/a/images.coffer",
        "DOCKER_HOST": "unix:///tmp/docker.sock",
    }
    settings = Settings.load(config, env)
    assert settings.upstream_url == "https://env.example"  # env beats file
    assert settings.cache_dir == Path("/from/file")  # file beats default
    assert settings.shutdown_grace == 3.5
    assert settings.inline_max_bytes == 100
    assert settings.socket_path == Path("/run/x/s.sock")
    assert settings.archive_path == Path("/a/images.coffer")
    assert settings.docker_host == "unix:///tmp/docker.sock"


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('cache_dir = "/c"\n')
    assert Settings.load(None, {"COFFER_CONFIG": str(config)}).cache_dir == Path("/c")


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("", {"COFFER_UPSTREAM_URL": "ftp://x"}, "http"),
        ("", {"COFFER_SHUTDOWN_GRACE": "0"}, "positive"),
        ("", {"COFFER_INLINE_MAX_BYTES": "many"}, "not a valid int"),
        ("", {"COFFER_INLINE_MAX_BYTES": "-1"}, "negative"),
        ("colour = 1\n", {}, "unknown setting"),
        ("this is not toml", {}, "cannot read config file"),
    ],
)
def test_bad_values_are_refused(
    tmp_path: Path, content: str, env: dict[str, str], message: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(content)
    with pytest.raises(SettingsError, match=message):
        Settings.load(config, env)


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        Settings.load(tmp_path / "missing.toml", {})


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.cache_dir = Path("/elsewhere")  # type: ignore[misc]


def test_the_metrics_textfile_is_off_unless_a_directory_is_given() -> None:
    assert Settings.from_mapping({}).metrics_textfile_dir is None
    assert Settings.from_mapping({"metrics_textfile_dir": ""}).metrics_textfile_dir is None
    on = Settings.load(
        None,
        {
            "COFFER_METRICS_TEXTFILE_DIR": "/var/lib/prometheus/node-exporter",
            "COFFER_CONFIG": "/dev/null",
            "COFFER_METRICS_INTERVAL": "2.5",
        },
    )
    assert on.metrics_textfile_dir == Path("/var/lib/prometheus/node-exporter")
    assert on.metrics_interval == 2.5
    with pytest.raises(SettingsError, match="metrics_interval must be positive"):
        Settings.from_mapping({"metrics_interval": 0})


def test_isolation_settings_from_file_and_environment(tmp_path: Path) -> None:
    import os

    config = tmp_path / "cofferd.toml"
    config.write_text("login_uids = [0, 1234]\nmax_connections_per_uid = 4\n")
    s = Settings.load(config, environ={"COFFER_IDLE_TIMEOUT": "5"})
    assert s.login_uids == (0, 1234)
    assert s.allowed_login_uids() == {0, 1234}
    assert s.max_connections_per_uid == 4
    assert s.idle_timeout == 5.0
    s = Settings.load(config, environ={"COFFER_LOGIN_UIDS": "7, 8"})
    assert s.allowed_login_uids() == {7, 8}
    assert Settings().allowed_login_uids() == {0, os.getuid()}
    for bad in ({"COFFER_LOGIN_UIDS": "root"}, {"COFFER_IDLE_TIMEOUT": "0"}):
        with pytest.raises(SettingsError):
            Settings.load(config, environ=bad)
