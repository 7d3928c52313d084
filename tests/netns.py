"""Separate hosts on one machine: each a Linux network namespace with its own address on a private bridge
(`ip netns` + veth pairs), so its processes reach the others only over the network, as on a LAN. The test
process stays in the root namespace and reaches every host through the bridge's address. Needs root."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def netns_problem() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"adaprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _ip(*args: str, netns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass
class Host:
    name: str
    netns: str
    address: str
    folder: Path  # this host's own disk: nothing in it is visible to the other hosts' configuration

    def start(self, command: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen:
        """`command` on this host, in a session of its own, its output in folder/log_name."""
        tmp = self.folder / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        with open(self.folder / log_name, "ab") as log:
            return subprocess.Popen(["ip", "netns", "exec", self.netns, *command], env={**env, "TMPDIR": str(tmp)},
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, command: list[str], env: dict[str, str], timeout: float = 120) -> str:
        done = subprocess.run(["ip", "netns", "exec", self.netns, *command], env=env, capture_output=True,
                              text=True, timeout=timeout)
        assert done.returncode == 0, f"{command} on {self.name}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def kill(self) -> None:
        """The host dies: every process in its namespace gets SIGKILL, with no chance to clean up."""
        pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log(self, name: str) -> str:
        path = self.folder / name
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@contextmanager
def network(names: list[str], folder: Path) -> Iterator[tuple[str, dict[str, Host]]]:
    """A bridge at <subnet>.1 (the test's own address) and one host per name at .2, .3, ...; all torn down
    afterwards, with every process still running in them. The /24 is drawn at random from 10.200-249.x, so
    two runs on one machine do not collide."""
    tag = uuid.uuid4().hex[:6]
    subnet = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
    bridge = f"adabr{tag}"
    hosts: dict[str, Host] = {}
    _ip("link", "add", bridge, "type", "bridge")
    try:
        _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for number, name in enumerate(names, start=2):
            netns, outside = f"ada{tag}-{name}", f"adav{tag}{number}"
            _ip("netns", "add", netns)
            hosts[name] = Host(name, netns, f"{subnet}.{number}", folder / name)
            hosts[name].folder.mkdir(parents=True)
            _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("link", "set", outside, "master", bridge)
            _ip("link", "set", outside, "up")
            _ip("addr", "add", f"{subnet}.{number}/24", "dev", "eth0", netns=netns)
            _ip("link", "set", "eth0", "up", netns=netns)
            _ip("link", "set", "lo", "up", netns=netns)
        yield f"{subnet}.1", hosts
    finally:
        for host in hosts.values():
            host.kill()
            subprocess.run(["ip", "netns", "delete", host.netns], capture_output=True)
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
