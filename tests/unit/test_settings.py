"""Validation of inventory and group data: clear errors naming the file and the key."""

import textwrap
from pathlib import Path

import pytest

from tpe_ops.errors import ConfigError
from tpe_ops.inventory import load_inventory
from tpe_ops.settings import validate_values


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "inv.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_wrong_type_names_file_and_key(tmp_path):
    inv = write(tmp_path, """
        app_servers = [("web1", {"ssh_hostname": "127.0.0.1", "redis_port": "63x9"})]
    """)
    with pytest.raises(ConfigError) as error:
        load_inventory(str(inv))
    assert "inv.py" in str(error.value) and "redis_port" in str(error.value)
    assert "must be int" in str(error.value)


def test_unknown_key_is_refused(tmp_path):
    inv = write(tmp_path, 'app_servers = [("web1", {"redis_prot": 6380})]\n')
    with pytest.raises(ConfigError, match="unknown setting 'redis_prot'"):
        load_inventory(str(inv))


def test_syntax_error_names_file_and_line(tmp_path):
    inv = write(tmp_path, 'app_servers = [("web1", {"redis_port": 6380)]\n')
    with pytest.raises(ConfigError) as error:
        load_inventory(str(inv))
    assert "inv.py:1" in str(error.value) and "syntax error" in str(error.value)


def test_missing_required_value(tmp_path):
    inv = write(tmp_path, 'app_servers = [("web1", {"app_user": None})]\n')
    with pytest.raises(ConfigError, match="missing required setting.*app_user"):
        load_inventory(str(inv))


def test_bad_choice_and_port_range():
    with pytest.raises(ConfigError, match="node_install_method"):
        validate_values({"node_install_method": "brew"}, "x.py")
    with pytest.raises(ConfigError, match="not a TCP port"):
        validate_values({"app_backend_port": 70000}, "x.py")
    with pytest.raises(ConfigError, match="must be int"):
        validate_values({"redis_port": True}, "x.py")


def test_pm2_apps_are_checked():
    with pytest.raises(ConfigError, match=r"pm2_apps\[0\] is missing 'script'"):
        validate_values({"pm2_apps": [{"name": "a", "role": "backend"}]}, "g.py")


def test_unknown_inventory_name_lists_known_ones():
    with pytest.raises(ConfigError) as error:
        load_inventory("nope")
    assert "local" in error.value.hint and "production" in error.value.hint


def test_production_inventory_without_addresses_is_clear(monkeypatch, tmp_path):
    monkeypatch.delenv("TPE_PRODUCTION_HOSTS", raising=False)
    monkeypatch.setenv("TPE_HOSTS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="TPE_PRODUCTION_HOSTS"):
        load_inventory("production")


def test_production_inventory_is_marked_and_strict(monkeypatch):
    monkeypatch.setenv("TPE_PRODUCTION_HOSTS", "10.0.0.5,10.0.0.6")
    loaded = load_inventory("production")
    assert [h.name for h in loaded.hosts] == ["10.0.0.5", "10.0.0.6"]
    assert loaded.is_production
    host = loaded.hosts[0]
    assert host.data.ssh_strict_host_key_checking == "yes"
    assert host.data.app_backend_port == 5000 and host.data.redis_port == 6379


def test_limit_selects_host_or_group(monkeypatch):
    monkeypatch.setenv("TPE_STAGING_HOSTS", "10.0.0.7,10.0.0.8")
    assert [h.name for h in load_inventory("staging", "10.0.0.8").hosts] == ["10.0.0.8"]
    assert len(load_inventory("staging", "app_servers").hosts) == 2
    with pytest.raises(ConfigError, match="no such host or group"):
        load_inventory("staging", "web9")
