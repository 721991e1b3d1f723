"""Node.js at the configured major version: NodeSource's apt repository or the distro package."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation
from pyinfra.facts.files import File
from pyinfra.operations import apt

NODESOURCE_KEY_URL = "https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key"
NODESOURCE_KEYRING = "/etc/apt/keyrings/nodesource.gpg"


class NodeMajorVersion(FactBase):
    """The major version of the installed `node`, or None."""

    def command(self) -> str:
        return "node --version 2>/dev/null || true"

    def process(self, output: list[str]) -> int | None:
        text = output[0].strip().lstrip("v") if output else ""
        return int(text.split(".")[0]) if text[:1].isdigit() else None


def _check_major(major: int) -> StringCommand:
    return StringCommand(
        f"node --version | grep -q '^v{major}\\.' || "
        f"{{ echo \"installed Node.js is $(node --version), node_major_version is {major}: "
        f'use node_install_method=nodesource or set node_major_version" >&2; exit 1; }}'
    )


@operation()
def installed(major: int, method: str):
    """Install Node.js `major` (and npm) unless it is there already."""
    if host.get_fact(NodeMajorVersion) == major:
        host.noop(f"Node.js {major} is installed")
        return
    if method == "nodesource":
        if not host.get_fact(File, path=NODESOURCE_KEYRING):
            yield "install -d -m 0755 /etc/apt/keyrings"
            yield f"curl -fsSL {NODESOURCE_KEY_URL} | gpg --dearmor -o {NODESOURCE_KEYRING}"
        yield from apt.repo._inner(
            src=f"deb [signed-by={NODESOURCE_KEYRING}] "
            f"https://deb.nodesource.com/node_{major}.x nodistro main",
            filename="nodesource",
        )
        yield "apt-get update -qq"
        packages = ["nodejs"]  # NodeSource's nodejs ships npm
    else:
        packages = ["nodejs", "npm"]
    yield (
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        + " ".join(packages)
    )
    yield _check_major(major)
