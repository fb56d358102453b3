"""The kong engine's files, rendered by the roles for the production inventory and checked.

Kong itself cannot be installed here. What runs instead: the gateway and kong roles render
kong.conf, kong.yml, the plugin tree and (docker runtime) the container contract into a
temporary directory through ansible-playbook (tests/unit/kong/render.yml, the production
inventory with gateway_engine=kong); decK validates kong.yml against Kong's declarative
format; the aws-masker plugin configuration is compared with the fields of its schema.lua as
LuaJIT loads it (tests/lua/kong_schema_fields.lua); the guide's names, ports and limits are
asserted; lua_package_path is resolved against the installed tree (through the container's
mounts on the docker runtime); every Lua file passes luac -p and luajit -bl.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.unit.test_mapping_store import ansible_bin

REDIS_PASSWORD = "redis-pass-sentinel-7f3a9c"
SCOPE_SECRET = "scope-secret-sentinel-5d1e8b2c40"
MAX_BODY_BYTES = 33554432  # gateway_max_body_bytes, the default production keeps
GUIDE_DECLARATIVE = "/usr/local/kong/declarative/kong.yml"
GUIDE_PLUGIN_DIR = "/usr/local/kong/plugins/aws-masker"
PLUGIN_MODULES = ["handler", "schema", "pipelines", "catalog_path"]
CORE_MODULES = sorted(path.stem for path in (REPO / "lua" / "aws_masker").glob("*.lua"))

# runtime -> extra variables of that render (the docker one also scopes by a header).
VARIANTS = {
    "host": {},
    "docker": {"gateway_scope_by": "header", "gateway_scope_header": "X-Team-Id"},
}


def _env():
    return dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="false",
                ANSIBLE_LOCALHOST_WARNING="false")


def _render_all(tmp: Path) -> dict:
    """One ansible-playbook run over the production inventory, plus one host per runtime in
    its gateway group (a throwaway inventory beside it): runtime -> what was rendered."""
    hosts = {
        f"kong-{runtime}": {
            "aws_masking_runtime": runtime,
            "kong_config_dir": str(tmp / runtime / "etc"),
            "kong_lua_dir": str(tmp / runtime / "lua"),
            "gateway_log_dir": str(tmp / runtime / "log"),
            "service_manager_log_dir": str(tmp / runtime / "service-logs"),
            "render_contract_file": str(tmp / runtime / "contract.json"),
            **VARIANTS[runtime],
        }
        for runtime in VARIANTS
    }
    inventory = tmp / "render-hosts.yml"
    inventory.write_text(yaml.safe_dump({"gateway": {"hosts": hosts}}), encoding="utf-8")
    extra = {
        "gateway_engine": "kong",
        "kong_file_group": "root",
        # Kong is not installed: nothing to run kong check / kong config parse with, and no
        # program under a service manager to reload.
        "kong_check_files": False,
        "service_manager_type": "systemd",
        "service_manager_program_pending": True,
        # What the gateway role's secrets tasks read from the Redis host and the scope keeper.
        "gateway_effective_redis_password": REDIS_PASSWORD,
        "gateway_effective_scope_secret": SCOPE_SECRET,
        "ansible_python_interpreter": shutil.which("python3"),
    }
    vars_file = tmp / "vars.json"
    vars_file.write_text(json.dumps(extra), encoding="utf-8")
    done = subprocess.run(
        [ansible_bin("ansible-playbook"), "-i", "inventories/production", "-i", str(inventory),
         "--limit", ",".join(hosts), "--diff", "tests/unit/kong/render.yml",
         "-e", f"@{vars_file}"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert all(f"kong-{runtime}" in output for runtime in VARIANTS), output
    return {runtime: _collect(tmp / runtime, runtime, output) for runtime in VARIANTS}


def _collect(tmp: Path, runtime: str, output: str) -> dict:
    contract = tmp / "contract.json"
    container = tmp / "contract.json.container.json"
    return {
        "runtime": runtime,
        "output": output,
        "conf_path": tmp / "etc" / "kong.conf",
        "yml_path": tmp / "etc" / "kong.yml",
        "conf": _parse_conf(tmp / "etc" / "kong.conf"),
        "yml": yaml.safe_load((tmp / "etc" / "kong.yml").read_text(encoding="utf-8")),
        "contract": json.loads(contract.read_text(encoding="utf-8")) if contract.exists() else None,
        "container": (json.loads(container.read_text(encoding="utf-8"))
                      if container.exists() else None),
    }


def _parse_conf(path: Path) -> dict:
    conf = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key = value line: {line!r}"
        assert key.strip() not in conf, f"{key.strip()} set twice"
        conf[key.strip()] = value.strip()
    return conf


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    return _render_all(tmp_path_factory.mktemp("kong"))


@pytest.fixture(params=sorted(VARIANTS))
def rendered(request, renders):
    return renders[request.param]


@pytest.fixture(scope="module")
def schema():
    done = subprocess.run(["luajit", "tests/lua/kong_schema_fields.lua"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def _service(doc):
    (service,) = doc["services"]
    return service


def _masker_config(doc):
    plugins = [p for p in _service(doc)["plugins"] if p["name"] == "aws-masker"]
    assert len(plugins) == 1
    return plugins[0]["config"]


def _host_path(rendered, in_kong: str) -> Path:
    """Where a path Kong sees lives on the host: itself on the host runtime, through the
    container's mounts on the docker runtime."""
    if rendered["runtime"] == "host":
        return Path(in_kong)
    for volume in rendered["contract"]["volumes"]:
        source, target, mode = volume.split(":")
        assert mode == "ro"
        if in_kong == target or in_kong.startswith(target + "/"):
            return Path(source + in_kong[len(target):])
    raise AssertionError(f"{in_kong} is not mounted into the container")


# --- decK -------------------------------------------------------------------------------


def _deck(path: Path):
    deck = shutil.which("deck")
    assert deck, "decK is missing: scripts/bootstrap.sh --test installs the Debian package deck"
    return subprocess.run([deck, "validate", "--state", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_deck_validates_the_rendered_kong_yml(rendered):
    done = _deck(rendered["yml_path"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_deck_refuses_a_kong_yml_kong_would_refuse(rendered, tmp_path):
    # The same document with a mistyped service field: decK must see it, or the test above
    # proves nothing.
    doc = rendered["yml"]
    broken = json.loads(json.dumps(doc))
    _service(broken)["retries"] = "none"
    path = tmp_path / "kong.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    done = _deck(path)
    assert done.returncode != 0
    assert "retries" in done.stdout + done.stderr


# --- kong.yml -----------------------------------------------------------------------------


def _route_for(doc, path: str, method: str):
    """The route Kong would pick: regex paths (anchored at the start, as Kong anchors them)
    before prefix paths, longest prefix first."""
    routes = _service(doc)["routes"]
    for route in routes:
        for candidate in route["paths"]:
            if candidate.startswith("~") and re.match(candidate[1:], path) \
                    and method in route["methods"]:
                return route["name"]
    prefixes = sorted(((candidate, route) for route in routes for candidate in route["paths"]
                       if not candidate.startswith("~")), key=lambda item: -len(item[0]))
    for candidate, route in prefixes:
        if path.startswith(candidate) and method in route["methods"]:
            return route["name"]
    return None


@pytest.mark.parametrize(("path", "method", "route"), [
    ("/v1/messages", "POST", "messages"),
    ("/v1/messages/count_tokens", "POST", "messages-count-tokens"),
    ("/v1/messages/batches", "POST", "messages-batches"),
    ("/v1/messages/batches", "GET", "messages-batches"),
    ("/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF/results", "GET",
     "messages-batches"),
    ("/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF", "DELETE", "messages-batches"),
    ("/v1/messages/batchesX", "POST", "v1"),
    ("/v1/models", "GET", "v1"),
    ("/v1/complete", "POST", "v1"),
    ("/v2/messages", "POST", None),
    ("/health", "GET", None),
])
def test_routes_cover_the_messages_api_and_the_rest_of_v1(rendered, path, method, route):
    assert _route_for(rendered["yml"], path, method) == route


def test_every_route_proxies_unchanged_and_streams(rendered):
    service = _service(rendered["yml"])
    assert [r["name"] for r in service["routes"]] == [
        "messages", "messages-count-tokens", "messages-batches", "v1"]
    for route in service["routes"]:
        assert route["protocols"] == ["http"]
        assert route["strip_path"] is False
        assert route["preserve_host"] is False
        assert route["request_buffering"] is True
        assert route["response_buffering"] is False, "streams must flow event by event"


def test_the_service_is_the_api_with_tls_verified(rendered):
    service = _service(rendered["yml"])
    assert (service["protocol"], service["host"], service["port"]) == \
        ("https", "api.anthropic.com", 443)
    assert service["tls_verify"] is True
    assert service["tls_verify_depth"] == 3
    assert service["retries"] == 0
    assert (service["connect_timeout"], service["write_timeout"], service["read_timeout"]) == \
        (10_000, 300_000, 300_000)
    assert "path" not in service


def test_prometheus_runs_globally_and_aws_masker_on_the_service(rendered):
    doc = rendered["yml"]
    assert [p["name"] for p in doc["plugins"]] == ["prometheus"]
    assert [p["name"] for p in _service(doc)["plugins"]] == ["aws-masker"]
    assert doc["_format_version"] == "3.0"


def _check_value(name, field, value):
    kind = field["type"]
    if kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), name
    elif kind == "string":
        assert isinstance(value, str), name
        assert len(value) >= field.get("len_min", 1), f"{name}: Kong refuses an empty string"
    elif kind == "record":
        assert isinstance(value, dict), name
    else:
        raise AssertionError(f"{name}: a field type this test does not know: {kind}")
    if "between" in field:
        low, high = field["between"]
        assert low <= value <= high, name
    if "one_of" in field:
        assert value in field["one_of"], name
    if "match" in field:
        assert "%" not in field["match"], f"{name}: a Lua pattern this test cannot read"
        assert re.search(field["match"], value), name


def _check_record(prefix, fields, config):
    present = set(config)
    required = {name for name, field in fields.items() if field.get("required")}
    assert present <= set(fields), f"{prefix}: keys the schema does not have: " \
        f"{sorted(present - set(fields))}"
    assert required <= present, f"{prefix}: required keys missing: {sorted(required - present)}"
    for name in present:
        _check_value(f"{prefix}{name}", fields[name], config[name])
        if fields[name]["type"] == "record":
            _check_record(f"{prefix}{name}.", fields[name]["fields"], config[name])


def test_the_plugin_config_has_the_schema_fields_with_valid_values(rendered, schema):
    config = _masker_config(rendered["yml"])
    fields = schema["config"]
    assert schema["name"] == "aws-masker"
    _check_record("config.", fields, config)
    # Every field is written out, defaults included, so kong.yml says what runs; the one
    # optional field is left out only when it does not apply.
    expected = set(fields) - ({"scope_header"} if config["scope_by"] != "header" else set())
    assert set(config) == expected
    assert set(config["redis"]) == set(fields["redis"]["fields"])


def test_the_plugin_config_carries_the_inventory_values_and_secrets(rendered):
    config = _masker_config(rendered["yml"])
    # The production fleet's gateways share the Redis host of its redis group.
    redis_host = yaml.safe_load((REPO / "inventories" / "production" / "hosts.yml").read_text(
        encoding="utf-8"))["all"]["hosts"]["redis-prod-1"]["ansible_host"]
    assert config["redis"] == {
        "host": redis_host, "port": 6379, "password": REDIS_PASSWORD, "database": 0,
        "connect_timeout_ms": 1000, "send_timeout_ms": 1000, "read_timeout_ms": 1000,
        "pool_size": 32, "keepalive_ms": 60000}
    assert config["scope_secret"] == SCOPE_SECRET
    assert config["mapping_ttl_seconds"] == 86400
    assert config["fail_mode"] == "closed"
    assert config["max_body_bytes"] == MAX_BODY_BYTES
    if rendered["runtime"] == "docker":
        assert (config["scope_by"], config["scope_header"]) == ("header", "X-Team-Id")
    else:
        assert config["scope_by"] == "credential"


def test_secrets_stay_out_of_the_output_and_the_file_is_private(rendered):
    assert REDIS_PASSWORD not in rendered["output"]
    assert SCOPE_SECRET not in rendered["output"]
    mode = stat.S_IMODE(rendered["yml_path"].stat().st_mode)
    assert mode == 0o640
    assert SCOPE_SECRET not in rendered["conf_path"].read_text(encoding="utf-8")


def test_the_catalog_kong_reads_is_the_collection_catalog(rendered):
    in_kong = _masker_config(rendered["yml"])["catalog_path"]
    on_host = _host_path(rendered, in_kong)
    catalog = yaml.safe_load((REPO / "catalog" / "aws_patterns.yml").read_text(encoding="utf-8"))
    assert json.loads(on_host.read_text(encoding="utf-8")) == catalog


# --- kong.conf ----------------------------------------------------------------------------


def test_kong_conf_is_db_less_with_the_plugin(rendered):
    conf = rendered["conf"]
    assert conf["database"] == "off"
    assert conf["plugins"] == "bundled,aws-masker"
    assert conf["nginx_daemon"] == "off"
    assert conf["prefix"] == "/usr/local/kong"
    declarative = conf["declarative_config"]
    if rendered["runtime"] == "docker":
        assert declarative == GUIDE_DECLARATIVE
    assert _host_path(rendered, declarative).read_bytes() == rendered["yml_path"].read_bytes()


def test_kong_conf_has_the_guides_ports_limits_and_settings(rendered):
    conf = rendered["conf"]
    loopback_inside = rendered["runtime"] == "host"
    bind = "127.0.0.1" if loopback_inside else "0.0.0.0"
    assert conf["proxy_listen"] == f"{'127.0.0.1' if loopback_inside else '0.0.0.0'}:8010"
    assert conf["admin_listen"] == f"{bind}:8001"
    assert conf["status_listen"] == f"{bind}:8100"
    assert conf["admin_gui_listen"] == "off"
    assert conf["nginx_worker_processes"] == "2"
    assert conf["nginx_events_worker_connections"] == "4096"
    assert conf["mem_cache_size"] == "2048m"
    assert conf["log_level"] == "notice"
    assert conf["headers"] == "off"


def test_the_request_body_buffer_holds_the_largest_masked_body(rendered):
    conf = rendered["conf"]
    max_body = _masker_config(rendered["yml"])["max_body_bytes"]
    assert int(conf["nginx_http_client_body_buffer_size"]) >= max_body
    assert int(conf["nginx_http_client_max_body_size"]) == max_body


def test_the_upstream_is_verified_against_the_ca_bundle(rendered):
    conf = rendered["conf"]
    ca = _host_path(rendered, conf["lua_ssl_trusted_certificate"])
    assert ca == Path("/etc/ssl/certs/ca-certificates.crt")
    assert conf["lua_ssl_verify_depth"] == "3"


def _resolve(rendered, module: str) -> Path | None:
    for template in rendered["conf"]["lua_package_path"].split(";"):
        if not template:
            continue
        candidate = template.replace("?", module.replace(".", "/"))
        try:
            on_host = _host_path(rendered, candidate)
        except AssertionError:
            continue  # not mounted: Kong finds nothing there either
        if on_host.is_file():
            return on_host
    return None


def test_lua_package_path_finds_the_plugin_and_its_core(rendered):
    conf = rendered["conf"]
    assert conf["lua_package_path"].endswith(";;"), "Kong's own tree must stay searchable"
    for name in PLUGIN_MODULES:
        found = _resolve(rendered, f"kong.plugins.aws-masker.{name}")
        source = REPO / "lua" / "kong" / "plugins" / "aws-masker" / f"{name}.lua"
        assert found is not None, name
        assert found.read_bytes() == source.read_bytes()
    for name in CORE_MODULES:
        found = _resolve(rendered, f"aws_masker.{name}")
        assert found is not None, name
        assert found.read_bytes() == (REPO / "lua" / "aws_masker" / f"{name}.lua").read_bytes()
    if rendered["runtime"] == "docker":
        # The guide's plugin directory: docker exec claude-kong ls / luac -p there.
        handler = _resolve(rendered, "kong.plugins.aws-masker.handler")
        assert handler == _host_path(rendered, f"{GUIDE_PLUGIN_DIR}/handler.lua")


# --- the docker runtime's contract --------------------------------------------------------


def test_the_container_contract_has_the_guides_names_ports_and_limits(rendered):
    contract = rendered["contract"]
    if rendered["runtime"] != "docker":
        assert contract is None
        return
    assert contract["name"] == "claude-kong"
    assert contract["network"] == "claude-enterprise"
    assert contract["network_aliases"] == ["kong"]
    assert contract["image"] == "kong:3.9.1"
    assert contract["memory"] == "4G"
    assert contract["restart_policy"] == "unless-stopped"
    assert contract["ports"] == ["127.0.0.1:8010:8010", "127.0.0.1:8001:8001",
                                 "127.0.0.1:8100:8100"]
    assert contract["healthcheck"]["test"] == ["CMD", "kong", "health"]
    assert contract["healthcheck"]["retries"] == 5
    assert contract["validate_command"][:3] == ["kong", "config", "parse"]
    assert contract["status_url"] == "http://127.0.0.1:8100/status"
    assert contract["files_changed"] is True  # a first render into an empty directory
    for volume in contract["volumes"]:
        assert Path(volume.split(":")[0]).exists(), volume


def test_the_docker_runtime_runs_kong_from_the_contract(rendered):
    """What community.docker.docker_container receives for claude-kong: the docker runtime's
    plan of the kong role's contract (the same entry point its deploy runs before the module)."""
    planned = rendered["container"]
    if rendered["runtime"] != "docker":
        assert planned is None
        return
    contract = rendered["contract"]
    assert planned["name"] == "claude-kong"
    assert planned["image"] == "kong:3.9.1"
    assert planned["networks"] == [{"name": "claude-enterprise", "aliases": ["kong"]}]
    assert planned["published_ports"] == contract["ports"]
    assert planned["memory"] == "4G"
    assert planned["restart_policy"] == "unless-stopped"
    assert planned["healthcheck"]["test"] == ["CMD", "kong", "health"]
    assert planned["env"] == contract["env"]
    mounts = {(m["source"], m["target"]) for m in planned["mounts"]}
    assert mounts == {tuple(v.split(":")[:2]) for v in contract["volumes"]}
    assert all(m["type"] == "bind" and m["read_only"] is True for m in planned["mounts"])
    assert REDIS_PASSWORD not in json.dumps(planned) and SCOPE_SECRET not in json.dumps(planned)


# --- Lua and playbooks --------------------------------------------------------------------


LUA_FILES = sorted((REPO / "lua").rglob("*.lua"))


@pytest.mark.parametrize("path", LUA_FILES, ids=lambda p: str(p.relative_to(REPO / "lua")))
def test_every_lua_file_compiles(path):
    for command in (["luac", "-p", str(path)], ["luajit", "-bl", str(path)]):
        # luajit -bl lists the bytecode, string constants as raw bytes: not decoded.
        done = subprocess.run(command, capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, f"{command[0]}: {done.stderr.decode(errors='replace')}"


def test_the_deploy_playbook_passes_syntax_check_with_the_kong_engine():
    done = subprocess.run(
        [ansible_bin("ansible-playbook"), "--syntax-check", "-i", "inventories/production",
         "playbooks/deploy.yml", "-e", "gateway_engine=kong", "-e", "aws_masking_runtime=host"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
