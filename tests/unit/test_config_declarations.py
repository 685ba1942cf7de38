"""Issue 26: each of chatd's settings is declared once (a field of config.Settings),
and the config file's schema, `chatctl config` and chatd's flags follow from it."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from mqchat.client.config_toml import render_settings
from mqchat.config import ENVIRONMENT, SETTINGS, load_settings
from mqchat.daemon.main import parser


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "MQCHAT_NAME": "alice",
    }


def test_every_setting_has_its_own_key_flag_and_variable() -> None:
    for attribute in ("key", "flag", "env"):
        given = [getattr(how, attribute) for _, how in SETTINGS if getattr(how, attribute)]
        assert len(given) == len(set(given)), attribute


def test_what_chatctl_config_prints_is_a_config_file_that_gives_the_same_settings(
    env: dict[str, str], tmp_path: Path
) -> None:
    env["MQCHAT_BROKER"] = "mqtt://a:1,mqtts://b"
    env["MQCHAT_GRACE_PERIOD"] = "77"
    first = load_settings({"state_dir": str(tmp_path / "s")}, env)
    saved = tmp_path / "saved.toml"
    saved.write_text("\n".join(render_settings(first.public_view())) + "\n")
    assert tomllib.loads(saved.read_text())["keys"]["grace_period"] == 77
    again = load_settings({"config": str(saved)}, {k: env[k] for k in env if "MQCHAT" not in k})
    assert dataclasses.replace(again, config_file=None) == first
    assert set(again.sources.values()) <= {"config file", "default"}
    assert again.sources["broker.url"] == again.sources["state_dir"] == "config file"


def test_chatds_flags_are_the_declared_ones() -> None:
    offered = {a.option_strings[0]: a for a in parser()._actions if a.option_strings}
    for _, how in SETTINGS:
        if how.flag:
            assert offered[how.flag].help == how.help, how.flag
            assert offered[how.flag].metavar == how.metavar, how.flag


def test_chatds_help_names_every_environment_variable() -> None:
    epilog = parser().epilog or ""
    assert [name for name in ENVIRONMENT if name not in epilog] == []
