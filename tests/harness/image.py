"""Build (once) and cache the base image that every test host boots from.

Two cached stages under ``$TPE_TEST_CACHE`` (default /var/cache/tpe-ops-tests):

* ``rootfs-<key>``: a raw debootstrap of Debian bookworm (slow, ~75 s);
* ``image-<key>``: a copy of it made into a test host (user, sshd, CAs, apt
  package lists and pre-downloaded .debs).

Each key is a hash of that stage's recipe (for the image: every file written,
the customize script, the harness public key, the controller's extra CAs and
the current REFRESH_DAYS period), so changing the recipe builds a new image;
stale ones are pruned once no process uses them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .common import HarnessError, cache_dir, file_lock, run, tail

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
INCLUDE = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "iproute2",
    "git", "curl", "ca-certificates", "procps", "gnupg",
)
# .debs pre-downloaded (not installed): provisioning installs them from zero.
PREFETCH = ("nodejs", "npm", "redis-server")
CONTROLLER_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CUSTOMIZE_SCRIPT = Path(__file__).with_name("customize-image.sh")
RECIPE_VERSION = 1
# The image (package lists, .debs) is rebuilt when this many days have passed, so
# hosts do not drift far from the archive; the debootstrap stage is kept.
REFRESH_DAYS = 7

SSHD_DROPIN = """\
# TPE Ops test host. The per-host Port is in 20-tpe-port.conf (written at boot).
ListenAddress 127.0.0.1
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
"""
POLICY_RC_D = """\
#!/bin/sh
# Test hosts share one loopback: packages must not start services when installed.
exit 101
"""
APT_CONF = """\
APT::Keep-Downloaded-Packages "true";
Binary::apt::APT::Keep-Downloaded-Packages "true";
Acquire::Languages "none";
"""
CA_PATH = "/etc/ssl/certs/ca-certificates.crt"


def _sources_list(mirror: str) -> str:
    security = mirror.rstrip("/") + "-security"  # .../debian -> .../debian-security
    return (
        f"deb {mirror} {SUITE} main\n"
        f"deb {mirror} {SUITE}-updates main\n"
        f"deb {security} {SUITE}-security main\n"
    )


def image_files(mirror: str) -> dict[str, tuple[str, int]]:
    """Static files written into the image: relative path -> (content, mode)."""
    return {
        "etc/sudoers.d/90-tpe-test-ubuntu": ("ubuntu ALL=(ALL) NOPASSWD:ALL\n", 0o440),
        "etc/ssh/sshd_config.d/10-tpe-test.conf": (SSHD_DROPIN, 0o644),
        "usr/sbin/policy-rc.d": (POLICY_RC_D, 0o755),
        "etc/apt/apt.conf.d/90tpe-test": (APT_CONF, 0o644),
        "etc/apt/sources.list": (_sources_list(mirror), 0o644),
        "etc/default/locale": ("LANG=C.UTF-8\n", 0o644),
        "etc/dpkg/dpkg.cfg.d/90tpe-test-unsafe-io": ("force-unsafe-io\n", 0o644),
        "etc/environment": (f"NODE_EXTRA_CA_CERTS={CA_PATH}\n", 0o644),
        "etc/npmrc": (f"cafile={CA_PATH}\n", 0o644),
    }


@dataclass(frozen=True)
class BaseImage:
    """A built base image (read-only overlay lowerdir) and the harness SSH key."""

    path: Path
    key: str
    rootfs: Path
    ssh_key: Path
    ssh_pubkey: Path
    cache: Path


def _digest(recipe: dict[str, object]) -> str:
    blob = json.dumps(recipe, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def mirror() -> str:
    """Debian mirror used by debootstrap and the image (``$TPE_TEST_MIRROR``)."""
    return os.environ.get("TPE_TEST_MIRROR") or DEFAULT_MIRROR


def ensure_keypair(cache: Path) -> tuple[Path, Path]:
    """Generate the harness ed25519 key pair once (private key mode 0600)."""
    key = cache / "ssh" / "id_ed25519"
    with file_lock(cache / ".keygen.lock"):
        if not key.exists():
            key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tpe-ops-tests",
                 "-f", key])
        key.chmod(0o600)
    return key, key.with_suffix(".pub")


def rootfs_recipe() -> dict[str, object]:
    """Everything that determines the debootstrap stage."""
    return {"suite": SUITE, "mirror": mirror(), "variant": "minbase",
            "include": sorted(INCLUDE), "version": RECIPE_VERSION}


def _run_logged(cmd: list[str], log: Path, what: str) -> None:
    """Run ``cmd`` with all output to ``log``; raise with the log's tail on failure."""
    with log.open("w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        raise HarnessError(f"{what} failed ({rc}), log {log}:\n{tail(log)}")


def _debootstrap(dest: Path, log: Path) -> None:
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
           SUITE, str(dest), mirror()]
    _run_logged(cmd, log, "debootstrap")


def _build_stage(final: Path, build: Callable[[Path, Path], None], log: Path) -> Path:
    """Build into a temp dir beside ``final`` then rename (atomic publish)."""
    if final.is_dir():
        return final
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp, log)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_rootfs(cache: Path) -> Path:
    """Return the cached raw debootstrap, building it if missing (call under lock)."""
    key = _digest(rootfs_recipe())
    log = cache / "logs" / f"rootfs-{key}.log"
    log.parent.mkdir(exist_ok=True)
    return _build_stage(cache / f"rootfs-{key}", _debootstrap, log)


PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _pem_blocks(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return PEM_RE.findall(path.read_text(errors="replace"))


def extra_cas(rootfs: Path) -> list[str]:
    """Certificates the controller trusts but the image's stock bundle lacks."""
    bundle = Path(os.environ.get("TPE_TEST_CA_BUNDLE") or CONTROLLER_CA_BUNDLE)
    stock = {"".join(b.split()) for b in _pem_blocks(rootfs / CA_PATH.lstrip("/"))}
    return [b for b in _pem_blocks(bundle) if "".join(b.split()) not in stock]


def image_recipe(rootfs: Path, pubkey: str, cas: list[str]) -> dict[str, object]:
    """Everything that determines the customized image."""
    return {
        "rootfs": rootfs.name,
        "files": image_files(mirror()),
        "script": CUSTOMIZE_SCRIPT.read_text(),
        "prefetch": list(PREFETCH),
        "pubkey": pubkey.strip(),
        "cas": hashlib.sha256("".join(cas).encode()).hexdigest(),
        "period": int(time.time() // (REFRESH_DAYS * 86400)),
        "version": RECIPE_VERSION,
    }


def _write(root: Path, rel: str, content: str, mode: int) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(mode)


def _customize(dest: Path, log: Path, rootfs: Path, pubkey: str, cas: list[str]) -> None:
    run(["cp", "-a", "--reflink=auto", f"{rootfs}/.", str(dest)])
    for rel, (content, mode) in image_files(mirror()).items():
        _write(dest, rel, content, mode)
    for i, pem in enumerate(cas):
        _write(dest, f"usr/local/share/ca-certificates/tpe-controller-{i:03d}.crt",
               pem + "\n", 0o644)
    build = dest / "var" / "tmp" / "tpe-build"
    _write(dest, "var/tmp/tpe-build/authorized_keys", pubkey.strip() + "\n", 0o600)
    _write(dest, "var/tmp/tpe-build/customize.sh", CUSTOMIZE_SCRIPT.read_text(), 0o755)
    cmd = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--as-pid2",
           "--resolv-conf=copy-host", "-D", str(dest),
           "/bin/bash", "/var/tmp/tpe-build/customize.sh", *PREFETCH]
    try:
        _run_logged(cmd, log, "image customization")
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _in_use(path: Path) -> bool:
    """True if an overlay mounts ``path`` or a process that obtained it holds its use lock."""
    if str(path) in Path("/proc/mounts").read_text():
        return True
    fd = os.open(use_lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def use_lock_path(stage: Path) -> Path:
    """Lock file held shared by every process using a cached stage (see _hold)."""
    return stage.with_name(f"{stage.name}.lock")


_HELD: dict[Path, int] = {}


def _hold(stage: Path) -> None:
    """Keep a shared use lock on ``stage`` for this process's lifetime (no prune)."""
    if stage not in _HELD:
        fd = os.open(use_lock_path(stage), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _HELD[stage] = fd


def _remove_stage(cache: Path, stage: Path) -> None:
    run(["rm", "-rf", "--one-file-system", stage], check=False)
    for extra in (cache / f"{stage.name}.json", use_lock_path(stage),
                  cache / "logs" / f"{stage.name}.log"):
        extra.unlink(missing_ok=True)


def prune_stale(cache: Path, keep: set[str]) -> None:
    """Remove cached stages of other recipes (and leftovers) that nothing uses."""
    for stage in cache.iterdir():
        if not stage.is_dir() or not stage.name.startswith(("rootfs-", "image-")):
            continue
        if stage.name not in keep and not _in_use(stage):
            _remove_stage(cache, stage)


def build_base_image(cache: Path | None = None) -> BaseImage:
    """Return the cached base image for the current recipe, building what is missing."""
    cache = cache or cache_dir()
    key_path, pub_path = ensure_keypair(cache)
    pubkey = pub_path.read_text()
    with file_lock(cache / ".build.lock"):
        started = time.monotonic()
        rootfs = ensure_rootfs(cache)
        cas = extra_cas(rootfs)
        key = _digest(image_recipe(rootfs, pubkey, cas))
        final = cache / f"image-{key}"
        if not final.is_dir():
            log = cache / "logs" / f"image-{key}.log"
            _build_stage(final, lambda d, lg: _customize(d, lg, rootfs, pubkey, cas), log)
            info = {"key": key, "rootfs": rootfs.name, "extra_cas": len(cas),
                    "seconds": round(time.monotonic() - started, 1)}
            (cache / f"image-{key}.json").write_text(json.dumps(info, indent=1) + "\n")
        _hold(final)
        prune_stale(cache, {rootfs.name, final.name})
    return BaseImage(path=final, key=key, rootfs=rootfs, ssh_key=key_path, ssh_pubkey=pub_path,
                     cache=cache)
