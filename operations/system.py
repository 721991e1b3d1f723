"""Services under systemd, or SysV init scripts where there is no systemd (the local target)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase, operation
from pyinfra.operations import systemd, sysvinit


class ServiceManager(FactBase):
    """'systemd' when systemd runs as init, else 'sysv'."""

    def command(self) -> str:
        return "[ -d /run/systemd/system ] && echo systemd || echo sysv"

    def process(self, output: list[str]) -> str:
        return output[0].strip() if output else "sysv"


class ConfigNewerThanService(FactBase):
    """True when a config file changed after the service last started.

    A restart handler relies on `did_change`, which is lost when a run fails between the
    config change and the restart; this fact lets the next run catch up.
    """

    def command(self, path: str, unit: str) -> str:
        return (
            f"f=$(stat -c %Y {path} 2>/dev/null || echo 0); "
            f"t=$(systemctl show -p ActiveEnterTimestamp --value {unit} 2>/dev/null); "
            's=$( [ -n "$t" ] && date -d "$t" +%s 2>/dev/null || echo 0); '
            '[ "$s" -gt 0 ] && [ "$f" -gt "$s" ] && echo stale || echo fresh'
        )

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0].strip() == "stale"


@operation()
def service(unit: str, running: bool = True, enabled: bool = True, restarted: bool = False):
    """Ensure a service state with whichever init the host has."""
    if host.get_fact(ServiceManager) == "systemd":
        yield from systemd.service._inner(
            service=unit, running=running, enabled=enabled, restarted=restarted
        )
    else:
        yield from sysvinit.service._inner(service=unit, running=running, restarted=restarted)


class AptListsPresent(FactBase):
    """Whether apt has package lists (a fresh machine or image may have none)."""

    def command(self) -> str:
        return "ls /var/lib/apt/lists/ 2>/dev/null | grep -q '_Packages' && echo yes || echo no"

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0].strip() == "yes"


@operation()
def apt_lists():
    """`apt-get update` once on a machine that has never fetched package lists."""
    if host.get_fact(AptListsPresent):
        host.noop("apt package lists are present")
        return
    yield "apt-get update -qq"
