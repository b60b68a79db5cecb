"""One reference for the settings: README's table lists every key the loader accepts and every
variable, the environment wins for every key it names, and an invalid value stops `check-config`
and `serve` alike, in one line."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, Settings, build_settings, load_settings
from gateway.config.schema import ENVIRONMENT, SECTIONS, keys

ROOT = Path(__file__).resolve().parents[2]
AMP_URL = "https://aps-workspaces.eu-west-2.amazonaws.com/workspaces/ws-0123abcd-4567"
HEADER = "| key | environment | meaning | default |"
NONE = "\N{EN DASH}"  # what the table shows for no key or no variable
ROW = re.compile(
    rf"^\| (?:`(?P<key>[^`]+)`|{NONE}) \| (?:`(?P<variable>GATEWAY_[A-Z0-9_]+)`|{NONE}) \| .+ \| .+ \|$"
)


def readme_rows() -> list[tuple[int, str | None, str | None]]:
    """(line number, key, variable) of each row of README's settings table."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines.count(HEADER) == 1, f"README.md needs exactly one settings table headed {HEADER}"
    start = lines.index(HEADER) + 2
    rows = []
    for number, line in enumerate(lines[start:], start + 1):
        if not line.startswith("|"):
            break
        match = ROW.match(line)
        assert match, (
            f"README.md line {number}: a row reads | `key` or {NONE} | `GATEWAY_...` or {NONE} | meaning | default |: {line}"
        )
        rows.append((number, match["key"], match["variable"]))
    return rows


def test_readme_lists_every_key_and_variable() -> None:
    rows = readme_rows()
    schema = keys()
    listed: dict[str, str | None] = {}
    for number, key, variable in rows:
        if key is None:
            assert variable is not None, f"README.md line {number}: a row needs a key or a variable"
            assert ENVIRONMENT.get(variable, "") is None, (
                f"README.md line {number}: {variable} sets a key; give it in the key column"
            )
            continue
        assert key not in listed, f"README.md line {number}: {key} is listed twice"
        listed[key] = variable
    missing = sorted(set(schema) - set(listed))
    assert not missing, f"README.md's settings table lacks a row for each of: {', '.join(missing)}"
    unknown = sorted(set(listed) - set(schema))
    assert not unknown, (
        f"README.md's settings table lists keys the loader does not accept: {', '.join(unknown)} "
        "(the accepted ones: gateway/config/schema.py)"
    )
    for key, variable in sorted(schema.items()):
        assert listed[key] == variable, (
            f"{key}: README.md's table says {listed[key] or NONE}, gateway/config/schema.py's ENVIRONMENT "
            f"says {variable or NONE}"
        )
    listed_variables = {variable for _, _, variable in rows if variable}
    assert listed_variables == set(ENVIRONMENT), (
        f"variables in ENVIRONMENT and not in README.md: {sorted(set(ENVIRONMENT) - listed_variables)}; "
        f"in README.md and not in ENVIRONMENT: {sorted(listed_variables - set(ENVIRONMENT))}"
    )


def test_every_variable_the_source_names_is_in_the_schema() -> None:
    named: dict[str, str] = {}
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        if path == ROOT / "gateway/config/schema.py":
            continue
        for variable in re.findall(r"\bGATEWAY_[A-Z0-9_]+\b", path.read_text()):
            named.setdefault(variable, str(path.relative_to(ROOT)))
    missing = {v: where for v, where in named.items() if v not in ENVIRONMENT}
    assert not missing, f"add these variables to ENVIRONMENT in gateway/config/schema.py: {missing}"
    stale = sorted(set(ENVIRONMENT) - set(named))
    assert not stale, f"ENVIRONMENT names variables no code reads: {stale}"
    for variable, key in ENVIRONMENT.items():
        assert key is None or key in keys(), f"{variable} sets {key}, which no section accepts"


# A configuration that uses every section, each validly: the base of the checks below.
BASE: dict[str, Any] = {
    "workspaces": [{"url": AMP_URL}],
    "upstream": {},
    "aws": {},
    "cache": {},
    "panels": {},
    "tls": {},
    "auth": {
        "principals": [{"name": "a", "token_sha256": "0" * 64, "workspaces": ["*"]}],
        "proxy": {"header": "X-User", "trusted_addresses": ["127.0.0.1/32"]},
        "cors": {"allow_origins": ["https://grafana.example.com"]},
        "failed_sign_ins": {"per_address": 5},
    },
    "limits": {"rate": {"per_second": 1}},
    "cost": {"budgets": [{"principal": "a", "samples": 1000}]},
    "quotas": {"rates": {}},
}


def _section(raw: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The mapping at a SECTIONS path inside `raw` (created when absent), and its error prefix."""
    node, shown = raw, []
    for part in [p for p in path.split(".") if p]:
        if part.endswith("[]"):
            node = node[part[:-2]][0]
            shown.append(f"{part[:-2]}[0]")
        else:
            node = node.setdefault(part, {})
            shown.append(part)
    return node, ".".join(shown)


def _outcome(raw: dict[str, Any], env: dict[str, str]) -> Settings | str:
    try:
        return build_settings(raw, env)
    except ConfigError as err:
        return f"ConfigError: {err}"


def test_the_base_configuration_is_valid() -> None:
    assert isinstance(_outcome(copy.deepcopy(BASE), {}), Settings)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_a_section_accepts_its_keys_and_refuses_others(section: str) -> None:
    raw = copy.deepcopy(BASE)
    node, prefix = _section(raw, section)
    node["no_such_key"] = 1
    refused = _outcome(raw, {})
    assert isinstance(refused, str) and refused.startswith(f"ConfigError: {prefix}"), (
        f"an unknown key in {section or 'the top level'} was not refused under {prefix!r}: {refused}"
    )
    raw = copy.deepcopy(BASE)
    node, _ = _section(raw, section)
    for key in SECTIONS[section]:  # the values may be wrong; the names must not be unknown
        node.setdefault(key, None)
    result = _outcome(raw, {})
    assert not (isinstance(result, str) and ("unknown" in result or "no_such_key" in result)), result


# Per variable: (the key's value in the file, the variable's value); each pair must make a difference.
SAMPLES: dict[str, tuple[Any, str]] = {
    "GATEWAY_LISTEN": ("127.0.0.1:7000", "127.0.0.1:7001"),
    "GATEWAY_UPSTREAM_URL": (
        "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-a",
        "https://aps-workspaces.us-west-2.amazonaws.com/workspaces/ws-b",
    ),
    "GATEWAY_REGION": ("eu-west-1", "us-west-2"),
    "GATEWAY_SIGV4": (True, "false"),
    "GATEWAY_ROLE_ARN": ("arn:aws:iam::111122223333:role/a", "arn:aws:iam::111122223333:role/b"),
    "GATEWAY_EXTERNAL_ID": ("a", "b"),
    "GATEWAY_SESSION_NAME": ("a", "b"),
    "GATEWAY_STS_REGION": ("eu-west-1", "us-west-2"),
    "GATEWAY_STS_ENDPOINT": ("https://sts.a.example", "https://sts.b.example"),
    "GATEWAY_UPSTREAM_CA_BUNDLE": ("/nonexistent/a.pem", "/nonexistent/b.pem"),
    "GATEWAY_UPSTREAM_CLIENT_CERT": ("/nonexistent/a.pem", "/nonexistent/b.pem"),
    "GATEWAY_UPSTREAM_CLIENT_KEY": ("/nonexistent/a.pem", "/nonexistent/b.pem"),
    "GATEWAY_CACHE": ("memory", "off"),
    "GATEWAY_REDIS_URL": ("redis://a:6379/0", "redis://b:6379/0"),
    "GATEWAY_REDIS_CLUSTER": (False, "true"),
    "GATEWAY_REDIS_STATE_URL": ("redis://a:6380/0", "redis://b:6380/0"),
    "GATEWAY_REDIS_NAMESPACE": ("blue", "green"),
    "GATEWAY_REDIS_HMAC_KEY": ("a" * 32, "b" * 32),
    "GATEWAY_AUTH": ({"principals": [{"name": "a", "token_sha256": "0" * 64, "workspaces": ["*"]}]}, "none"),
    "GATEWAY_TLS_CERT_FILE": ("/nonexistent/a.pem", "/nonexistent/b.pem"),
    "GATEWAY_TLS_KEY_FILE": ("/nonexistent/a.pem", "/nonexistent/b.pem"),
    "GATEWAY_LOG_LEVEL": ("debug", "warning"),
    "GATEWAY_LOG_PROBES": (False, "true"),
    "GATEWAY_WORKERS": (2, "3"),
    "GATEWAY_SHUTDOWN_GRACE": ("10s", "20s"),
}


@pytest.mark.parametrize("variable", sorted(v for v, key in ENVIRONMENT.items() if key is not None))
def test_the_environment_wins_for_every_key_it_names(variable: str) -> None:
    assert variable in SAMPLES, (
        f"add {variable} to SAMPLES in {Path(__file__).name}: (file value, variable value)"
    )
    in_file, in_env = SAMPLES[variable]
    key = ENVIRONMENT[variable]
    assert key is not None
    section, _, leaf = key.rpartition(".")
    raw: dict[str, Any] = {"workspaces": [{"url": AMP_URL}]}
    _section(raw, section)[0][leaf] = in_file
    file_only = _outcome(raw, {})
    both = _outcome(raw, {variable: in_env})
    env_only = _outcome({"workspaces": [{"url": AMP_URL}]}, {variable: in_env})
    assert both == env_only, f"the file's {key} still counts when {variable} is set"
    assert both != file_only, f"{variable}={in_env} made no difference over {key}: {in_file!r}"


@pytest.mark.parametrize("variable", sorted(v for v, key in ENVIRONMENT.items() if key is not None))
def test_an_empty_variable_counts_as_unset(variable: str) -> None:
    key = ENVIRONMENT[variable]
    assert key is not None
    section, _, leaf = key.rpartition(".")
    raw: dict[str, Any] = {"workspaces": [{"url": AMP_URL}]}
    _section(raw, section)[0][leaf] = SAMPLES[variable][0]
    assert _outcome(raw, {variable: ""}) == _outcome(raw, {})


NO_REGION = "workspaces: [{url: 'http://prom:9090'}]\n"


@pytest.mark.parametrize(
    ("env", "file", "check"),
    [
        ({"GATEWAY_SIGV4": "false"}, NO_REGION, lambda s: not s.workspaces[0].sigv4),
        ({"GATEWAY_REGION": "eu-west-1"}, NO_REGION, lambda s: s.workspaces[0].region == "eu-west-1"),
        ({}, NO_REGION + "sigv4: false\n", lambda s: not s.workspaces[0].sigv4),
        (  # the file's invalid value is not checked when the environment replaces it
            {"GATEWAY_ROLE_ARN": "arn:aws:iam::111122223333:role/a"},
            f"workspaces: [{{url: '{AMP_URL}', role_arn: nonsense}}]\n",
            lambda s: s.workspaces[0].role_arn == "arn:aws:iam::111122223333:role/a",
        ),
        (  # the default workspace is the one default_workspace names
            {"GATEWAY_SIGV4": "false"},
            f"default_workspace: prom\nworkspaces: [{{url: '{AMP_URL}'}}, {{url: 'http://prom:9090', alias: prom}}]\n",
            lambda s: s.workspaces[0].sigv4 and not s.workspaces[1].sigv4,
        ),
        (  # GATEWAY_UPSTREAM_URL replaces the entry with its id before that entry is checked
            {"GATEWAY_UPSTREAM_URL": AMP_URL},
            "workspaces: [{url: 'http://prom:9090', id: ws-0123abcd-4567}]\n",
            lambda s: [w.url for w in s.workspaces] == [AMP_URL],
        ),
    ],
)
def test_the_environment_applies_before_the_checks(
    env: dict[str, str], file: str, check: Any, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(file)
    assert check(load_settings(str(config), env=env))


OK_ENV = {"GATEWAY_UPSTREAM_URL": AMP_URL}


@pytest.mark.parametrize(
    ("env", "file", "line"),
    [
        (
            {**OK_ENV, "GATEWAY_LOG_LEVEL": "verbose"},
            None,
            "GATEWAY_LOG_LEVEL: must be debug, info, warning or error, got 'verbose'",
        ),
        (
            {},
            "log_level: loud\n" + NO_REGION.replace("http://prom:9090", AMP_URL),
            "log_level: must be debug",
        ),
        ({**OK_ENV, "GATEWAY_SIGV4": "maybe"}, None, "GATEWAY_SIGV4: must be true or false, got 'maybe'"),
        ({**OK_ENV, "GATEWAY_AUTH": "off"}, None, "GATEWAY_AUTH: only none is accepted"),
        ({**OK_ENV, "GATEWAY_WORKERS": "0"}, None, "GATEWAY_WORKERS: must be a whole number"),
        ({**OK_ENV, "GATEWAY_SHUTDOWN_GRACE": "soon"}, None, "GATEWAY_SHUTDOWN_GRACE: must be a duration"),
        ({**OK_ENV, "GATEWAY_LISTEN": "8080"}, None, "GATEWAY_LISTEN: must be host:port, got '8080'"),
        ({"GATEWAY_UPSTREAM_URL": "http://[::1"}, None, "GATEWAY_UPSTREAM_URL: must be an http(s) URL"),
        (OK_ENV, "upstream: {timeout: soon}\n", "upstream.timeout: must be a duration such as 30s or 5m"),
        ({}, NO_REGION, "workspaces[0].region: required when the upstream host is not an AMP host"),
    ],
)
def test_an_invalid_value_stops_check_config_and_serve_in_one_line(
    env: dict[str, str], file: str | None, line: str, tmp_path: Path
) -> None:
    args = []
    if file is not None:
        (tmp_path / "gateway.yaml").write_text(file)
        args = ["--config", str(tmp_path / "gateway.yaml")]
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway", command, *args],
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in ("check-config", "serve")
    ]
    done = []
    for run in runs:
        try:
            stdout, stderr = run.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.communicate()
            pytest.fail(f"{run.args} did not stop on an invalid setting")
        done.append((run.returncode, stdout, stderr))
    (checked, served) = done
    assert checked[0] == 2 and checked[1] == "", checked
    assert checked[2].startswith(f"amp-gateway: configuration error: {line}"), checked[2]
    assert checked[2].count("\n") == 1 and checked[2].endswith("\n"), checked[2]
    assert served == checked, f"serve: {served}\ncheck-config: {checked}"
