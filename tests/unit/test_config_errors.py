"""Issue 11 finding 7, issue 13 item 5: every bad setting is one ConfigError naming its source.

load_settings is what chatd and `chatctl config` both run; a ConfigError is
exit 2 with one line in both (tests/integration/test_bad_input.py runs them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mqchat.config import DEFAULT_TOPIC_PREFIX, load_settings
from mqchat.errors import ConfigError

NO_FLAGS: dict[str, str | None] = {}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "MQCHAT_NAME": "alice",
        "MQCHAT_BROKER": "mqtt://127.0.0.1:1883",
    }


def config_file(tmp_path: Path, content: bytes | str) -> Path:
    path = tmp_path / "config.toml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def refused(env: dict[str, str], *, flags: dict[str, str | None] = NO_FLAGS) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(flags, env)
    message = info.value.message
    assert "\n" not in message
    assert info.value.exit_code == 2
    return message


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'name = "caf\xe9"\n', "is not UTF-8 text"),
        ("a = " + "[" * 5000 + "]" * 5000, "nests arrays or tables too deeply"),
        ("a = " + "{b = " * 3000 + "1" + "}" * 3000, "nests arrays or tables too deeply"),
        ("name = 'a\nb", "is not valid TOML"),
        ("[store]\nretention = " + "9" * 5000, "is not valid TOML"),
        ("[store]\nretention = " + "9" * 40, "store.retention must be between 1 and"),
        ("[store]\nretention = 0", "store.retention must be between 1 and"),
        ("[broker]\nkeepalive = 4", "broker.keepalive must be between 5 and 65535"),
        ("[broker]\nkeepalive = true", "broker.keepalive must be an integer"),
        ("broker = 5", "[broker] must be a table"),
        ("broker = [1, 2]", "[broker] must be a table"),
        ("[[broker]]\nurl = 'mqtt://h'", "[broker] must be a table"),
        ("store = 'x'", "[store] must be a table"),
        ("name = {}", "name must be a string"),
        ("bogus = 1", "unknown setting 'bogus'"),
        ('name = "a\\u0007b"', "name: name must not contain control characters"),
        ('name = "   "', "name must be 1 to 64 bytes"),
        ('[broker]\nurl = "garbage"', "must start with one of mqtt://"),
        ('[broker]\nurl = "mqtt://h:70000"', "Port out of range"),
        ('[broker]\nurl = "mqtt://h:0"', "the port must be 1 to 65535"),
        ('[broker]\nurl = "mqtt://a b:1"', "must be printable text with no spaces"),
        ('[broker]\nurl = "mqtt://u:p@h"', "put no user name or password"),
        ('[broker]\nusername = "a\\u0000b"', "user name holds the control character"),
        ('[broker]\npassword_file = "/a\\u0000b"', "the path holds a NUL character"),
        ('[broker]\nca_file = "/nonexistent/ca.pem"', "broker.ca_file: cannot use"),
        ('[broker]\nca_file = "/"', "is not a regular file"),
        ("[keys]\ngrace_period = 0", "keys.grace_period must be between 1 and 2592000"),
        ("[keys]\ngrace_period = '1h'", "keys.grace_period must be an integer"),
    ],
)
def test_bad_config_file_is_one_line_naming_the_file(
    tmp_path: Path, env: dict[str, str], content: bytes | str, says: str
) -> None:
    path = config_file(tmp_path, content)
    env["MQCHAT_CONFIG"] = str(path)
    del env["MQCHAT_NAME"], env["MQCHAT_BROKER"]  # so that the file's values count
    message = refused(env)
    assert says in message
    assert str(path) in message


@pytest.mark.parametrize(
    ("prefix", "says"),
    [
        ("a\\u0000b", "holds the control character '\\x00'"),
        ("chat\\u0007", "holds the control character"),
        ("a\\nb", "holds the control character"),
        ("a\\u202eb", "holds the control character"),  # a bidi override is a format character
        ("a/+/b", "must not hold the wildcards"),
        ("a/#", "must not hold the wildcards"),
        ("chat+", "must not hold the wildcards"),
        ("$SYS/x", "must not start with $"),
        ("", "is empty"),
        ("/", "is empty"),
        ("a//b", "has an empty level"),
        ("/a", "has an empty level"),
        ("a//", "has an empty level"),
        ("x" * 201, "is 201 bytes of UTF-8; the limit is 200"),
        ("é" * 101, "is 202 bytes of UTF-8"),
    ],
)
def test_bad_topic_prefix_is_refused_with_its_reason(
    tmp_path: Path, env: dict[str, str], prefix: str, says: str
) -> None:
    path = config_file(tmp_path, f'[broker]\ntopic_prefix = "{prefix}"\n')
    env["MQCHAT_CONFIG"] = str(path)
    message = refused(env)
    assert message.startswith(f"config file {path}: broker.topic_prefix")
    assert says in message


@pytest.mark.parametrize(
    ("prefix", "used"),
    [("mqchat/v1/", "mqchat/v1"), ("team/chat", "team/chat"), ("x" * 200, "x" * 200)],
)
def test_good_topic_prefix_is_kept_without_a_trailing_slash(
    tmp_path: Path, env: dict[str, str], prefix: str, used: str
) -> None:
    env["MQCHAT_CONFIG"] = str(config_file(tmp_path, f'[broker]\ntopic_prefix = "{prefix}"\n'))
    assert load_settings(NO_FLAGS, env).topic_prefix == used


def test_defaults_are_valid(env: dict[str, str]) -> None:
    settings = load_settings(NO_FLAGS, env)
    assert settings.topic_prefix == DEFAULT_TOPIC_PREFIX
    assert settings.config_file is None
    assert settings.grace_period == 24 * 3600  # docs/protocol.md §17.4


def test_the_grace_period_comes_from_the_environment_or_the_file(
    env: dict[str, str], tmp_path: Path
) -> None:
    env["MQCHAT_GRACE_PERIOD"] = "5"
    assert load_settings(NO_FLAGS, env).grace_period == 5
    del env["MQCHAT_GRACE_PERIOD"]
    env["MQCHAT_CONFIG"] = str(config_file(tmp_path, "[keys]\ngrace_period = 7\n"))
    assert load_settings(NO_FLAGS, env).grace_period == 7


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("MQCHAT_NAME", "a\x1b[2Jb", "MQCHAT_NAME: name must not contain control characters"),
        ("MQCHAT_NAME", "a\udcffb", "MQCHAT_NAME: name is not valid UTF-8 text"),
        ("MQCHAT_NAME", "x" * 65, "MQCHAT_NAME: name must be 1 to 64 bytes"),
        ("MQCHAT_BROKER", "garbage", "MQCHAT_BROKER: 'garbage' must start with one of"),
        ("MQCHAT_BROKER", "mqtt://h:65536", "MQCHAT_BROKER: 'mqtt://h:65536' is not valid"),
        ("MQCHAT_BROKER", "mqtt://h:-1", "is not valid"),
        ("MQCHAT_BROKER", "mqtt://h:x", "is not valid"),
        ("MQCHAT_BROKER", "mqtt://[::1:5", "is not valid"),
        ("MQCHAT_BROKER", "mqtt://h\udcff", "must be printable text with no spaces"),
        ("MQCHAT_BROKER", "mqtt://h\n", "must be printable text with no spaces"),
        ("MQCHAT_BROKER", "mqtt://:1883", "has no host"),
        ("MQCHAT_BROKER_USERNAME", "bob\x00", "MQCHAT_BROKER_USERNAME: the user name holds"),
        ("MQCHAT_RUNTIME_DIR", "/tmp/\udcff", "MQCHAT_RUNTIME_DIR: the path /tmp/\\udcff"),
        ("MQCHAT_STATE_DIR", "/tmp/\udcff", "MQCHAT_STATE_DIR: the path"),
        ("MQCHAT_CONFIG", "/nonexistent/config.toml", "does not exist"),
        ("MQCHAT_CONFIG", "/", "is a directory, not a file"),
        ("MQCHAT_CONFIG", "/dev/zero", "is larger than 1048576 bytes"),
        ("MQCHAT_GRACE_PERIOD", "1h", "MQCHAT_GRACE_PERIOD must be between 1 and 2592000"),
        ("MQCHAT_GRACE_PERIOD", "0", "MQCHAT_GRACE_PERIOD must be between 1 and 2592000"),
        ("MQCHAT_GRACE_PERIOD", "\u0665", "MQCHAT_GRACE_PERIOD must be between"),
    ],
)
def test_bad_environment_is_one_line_naming_the_variable(
    env: dict[str, str], variable: str, value: str, says: str
) -> None:
    env[variable] = value
    assert says in refused(env).encode("ascii", "backslashreplace").decode()


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("name", "a\tb", "--name: name must not contain control characters"),
        ("broker", "", "--broker: '' must start with one of"),
        ("broker", "tcp://h", "--broker: 'tcp://h' must start with one of"),
        ("runtime_dir", "/tmp/\udcfe", "--runtime-dir: the path"),
        ("state_dir", "/tmp/\udcfe", "--state-dir: the path"),
        ("config", "/nonexistent.toml", "config file /nonexistent.toml does not exist"),
        ("config", "", "--config: the path is empty"),
        ("runtime_dir", "", "--runtime-dir: the path is empty"),
        ("state_dir", "", "--state-dir: the path is empty"),
    ],
)
def test_bad_flag_is_one_line_naming_the_flag(
    env: dict[str, str], flag: str, value: str, says: str
) -> None:
    assert says in refused(env, flags={flag: value})


def test_sources_name_the_environment_and_the_flag(env: dict[str, str], tmp_path: Path) -> None:
    env["MQCHAT_RUNTIME_DIR"] = str(tmp_path / "r")
    env["MQCHAT_STATE_DIR"] = str(tmp_path / "s")
    settings = load_settings(NO_FLAGS, env)
    assert (settings.runtime_dir, settings.state_dir) == (tmp_path / "r", tmp_path / "s")
    assert settings.sources["runtime_dir"] == settings.sources["state_dir"] == "environment"
    flagged = load_settings({"runtime_dir": str(tmp_path / "f")}, env)
    assert flagged.runtime_dir == tmp_path / "f"
    assert flagged.sources["runtime_dir"] == "flag"
    del env["MQCHAT_RUNTIME_DIR"], env["MQCHAT_STATE_DIR"]
    defaults = load_settings(NO_FLAGS, env)
    assert defaults.runtime_dir == tmp_path / "run" / "mqchat"
    assert defaults.sources["runtime_dir"] == "default"


def test_a_set_name_needs_no_user_database(env: dict[str, str]) -> None:
    # The default name (the login name) is looked up only when it is used.
    assert load_settings({"name": "carol"}, env).name == "carol"


def test_no_home_directory_is_one_line(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A uid with no passwd entry and no HOME (a container): "~" cannot be expanded.
    import pwd

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    env["MQCHAT_STATE_DIR"] = "~/state"
    assert "cannot expand ~/state: set HOME" in refused(env)
    del env["MQCHAT_STATE_DIR"], env["XDG_CONFIG_HOME"]
    assert "cannot expand ~/.config: set HOME" in refused(env)
