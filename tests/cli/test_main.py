"""The CLI's error contract: one clear line on stderr, no traceback, a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str, env_home, **env) -> subprocess.CompletedProcess:
    environment = {"PATH": "/usr/bin:/bin", "SLIPWAY_HOME": str(env_home), **env}
    return subprocess.run([sys.executable, "-m", "slipway", *args], capture_output=True, text=True,
                          env=environment, timeout=60)


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (("deploy", "/nonexistent/package"), {}, "no slipway.yaml here"),
        (("ls",), {}, "no API key"),
        (("ls",), {"SLIPWAY_API_KEY": "sk-slw-x", "SLIPWAY_URL": "http://127.0.0.1:9"}, "cannot reach slipway"),
        (("predict", "echo", "-d", "{not json"), {"SLIPWAY_API_KEY": "sk-slw-x"}, "--data is not valid JSON"),
        (("init", "Bad_Name"), {}, "not a valid"),
        (("scale", "dep-1"), {"SLIPWAY_API_KEY": "sk-slw-x"}, "nothing to change"),
    ],
)
def test_errors_are_one_clear_line(tmp_path, args, env, words):
    result = run(*args, env_home=tmp_path, **env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), result.stderr
    assert words in result.stderr


def test_help_lists_every_command(tmp_path):
    result = run("--help", env_home=tmp_path)
    assert result.returncode == 0
    for command in ("up", "init", "deploy", "ls", "predict", "logs", "scale", "promote", "rollback",
                    "keys", "usage", "bench", "gateway"):
        assert command in result.stdout


def test_a_long_error_is_not_wrapped(tmp_path):
    result = run("scale", "dep-1", env_home=tmp_path, SLIPWAY_API_KEY="sk-slw-x", COLUMNS="40")
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
