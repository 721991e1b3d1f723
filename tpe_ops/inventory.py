"""Load an inventory with its group data the way pyinfra's CLI does, then validate it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyinfra.api import Inventory, State
from pyinfra.api.host import Host
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory_from_files

from tpe_ops.errors import ConfigError
from tpe_ops.settings import validate_complete, validate_values

PROJECT_ROOT = Path(__file__).resolve().parents[1]
INVENTORIES = PROJECT_ROOT / "inventories"
GROUP_DATA = PROJECT_ROOT / "group_data"
DEFAULT_INVENTORY = "local"


@dataclass
class LoadedInventory:
    path: Path
    inventory: Inventory
    hosts: list[Host]  # the hosts selected by --limit

    def fresh(self, names: list[str] | None = None) -> LoadedInventory:
        """A new Inventory with new Host objects (pyinfra hosts keep per-run operation order,
        so each phase needs its own), limited to `names` (default: the selected hosts)."""
        wanted = set(names if names is not None else (h.name for h in self.hosts))
        inventory = _build(self.path)
        return LoadedInventory(self.path, inventory, [h for h in inventory if h.name in wanted])

    @property
    def is_production(self) -> bool:
        return any(host.data.deploy_environment == "production" for host in self.hosts)


def resolve_inventory_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate.resolve()
    named = INVENTORIES / f"{name_or_path}.py"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in INVENTORIES.glob("*.py") if p.stem != "__init__"))
    raise ConfigError(
        f"no inventory '{name_or_path}'", f"give a file path or one of: {known}"
    )


def _display(path: Path) -> str:
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def _syntax_error(error: SyntaxError, path: Path):
    where = _display(Path(error.filename)) if error.filename else _display(path)
    raise ConfigError(
        f"{where}:{error.lineno}: syntax error: {error.msg}", f"fix line {error.lineno}"
    ) from None


def _build(path: Path) -> Inventory:
    try:
        # pyinfra's loader executes the files with a State in context, as its CLI does.
        with ctx_state.use(State()):
            return make_inventory_from_files(str(path), cwd=str(PROJECT_ROOT))
    except SyntaxError as error:
        _syntax_error(error, path)
    except ConfigError:
        raise
    except Exception as error:  # an inventory file is user code: report any failure in it
        cause = getattr(error, "exception", error)  # pyinfra wraps errors of exec'd files
        if isinstance(cause, SyntaxError):
            return _syntax_error(cause, path)
        if isinstance(cause, ConfigError):  # the file explained itself (e.g. ec2.py): keep its hint
            raise ConfigError(f"{_display(path)}: {cause.message}", cause.hint) from None
        where = _display(Path(getattr(error, "filename", None) or path))
        raise ConfigError(f"{where}: {cause}", "fix that file") from None


def _validate_sources(path: Path, inventory: Inventory) -> None:
    for group, data in inventory.group_data.items():
        group_file = GROUP_DATA / f"{group}.py"
        source = _display(group_file) if group_file.exists() else _display(path)
        validate_values(data, f"{source} (group {group})")
    validate_values(inventory.data or {}, _display(GROUP_DATA / "all.py"))
    for name, data in inventory.host_data.items():
        validate_values(data, f"{_display(path)} (host {name})")


def _select(inventory: Inventory, limit: str | None) -> list[Host]:
    hosts = list(inventory)
    if not limit:
        return hosts
    if limit in inventory.groups:
        return list(inventory.get_group(limit))
    chosen = [host for host in hosts if host.name == limit]
    if not chosen:
        names = ", ".join([h.name for h in hosts] + sorted(inventory.groups))
        raise ConfigError(f"--limit {limit}: no such host or group", f"choose from: {names}")
    return chosen


def load_inventory(name_or_path: str | None, limit: str | None = None) -> LoadedInventory:
    path = resolve_inventory_path(name_or_path or DEFAULT_INVENTORY)
    inventory = _build(path)
    if not len(inventory):
        raise ConfigError(f"{_display(path)}: the inventory has no hosts", "add hosts to it")
    _validate_sources(path, inventory)
    for host in inventory:
        validate_complete(host.data.dict(), host.name)
    return LoadedInventory(path=path, inventory=inventory, hosts=_select(inventory, limit))
