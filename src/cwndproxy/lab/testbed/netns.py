"""The emulated WAN testbed: two network namespaces joined by the link emulator.

- ``<name>-c``: the client side (clients and the proxy), address 198.18.N.1
- ``<name>-o``: the origin side (demo origin or nginx), address 198.18.N.2

Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking range) and nothing is routed
anywhere else. Every testbed writes a state file (``/run/cwnd-testbed/<name>.json``) with
its namespaces and the pids it started, so ``down`` can remove it even after its owner
died.

Origin-side TCP defaults match a typical Linux server: cubic congestion control (set per
route, since the namespace sysctl is refused) and ``tcp_slow_start_after_idle=1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType

from cwndproxy.lab.testbed.link import default_queue_bytes
from cwndproxy.lab.testbed.observer import WindowObserver, ss_command


def state_dir() -> Path:
    """Where testbeds record their state; read at each use, so CWND_TESTBED_STATE set after
    import (a test, a wrapper) is honoured."""
    return Path(os.environ.get("CWND_TESTBED_STATE", "/run/cwnd-testbed"))


NAME_PREFIX = "cwt"


class TestbedUnavailable(Exception):
    """This machine cannot host a testbed (not root, no netns, no TUN); says why."""


@dataclass(frozen=True)
class LinkSpec:
    rtt: float  # seconds
    rate_bps: float
    queue_bytes: int | None = None
    loss: float = 0.0

    @property
    def bdp_bytes(self) -> int:
        return int(self.rate_bps * self.rtt / 8)

    @property
    def effective_queue(self) -> int:
        return self.queue_bytes or default_queue_bytes(self.rate_bps, self.rtt)

    def describe(self) -> str:
        return (
            f"{self.rtt * 1000:g} ms RTT, {self.rate_bps / 1e6:g} Mbit/s, queue "
            f"{self.effective_queue} B" + (f", loss {self.loss:g}" if self.loss else "")
        )


@dataclass
class TestbedState:
    name: str
    index: int
    client_ns: str
    origin_ns: str
    client_addr: str
    origin_addr: str
    link: dict[str, float | int | None]
    origin_cc: str
    origin_ssai: int
    owner_pid: int
    pids: dict[str, int] = field(default_factory=dict)
    created: float = field(default_factory=time.time)


def check_available() -> None:
    if os.geteuid() != 0:
        raise TestbedUnavailable("the WAN testbed needs root (network namespaces, TUN)")
    if shutil.which("ip") is None:
        raise TestbedUnavailable("iproute2 ('ip') is not installed")
    if not os.path.exists("/dev/net/tun"):
        raise TestbedUnavailable("/dev/net/tun is missing")
    probe = f"{NAME_PREFIX}probe{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        raise TestbedUnavailable(f"cannot create network namespaces: {result.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def netns_exec(ns: str) -> list[str]:
    return ["ip", "netns", "exec", ns]


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGINT (a graceful shutdown for the proxy, nginx and HAProxy alike), then SIGKILL
    after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cwnd_proxy_argv(command: str, *args: str) -> list[str]:
    """``cwnd-proxy COMMAND ARGS`` with this interpreter: inside a namespace (as root) the
    virtualenv's script need not be on PATH."""
    return [sys.executable, "-m", "cwndproxy", command, *args]


def list_states() -> list[TestbedState]:
    states = []
    if state_dir().is_dir():
        for path in sorted(state_dir().glob("*.json")):
            with contextlib.suppress(OSError, ValueError, TypeError):
                states.append(TestbedState(**json.loads(path.read_text())))
    return states


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill(pid: int, timeout: float = 3.0) -> None:
    """SIGTERM the process group the pid leads, then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            time.sleep(0.02)
        if not pid_alive(pid):
            return


def destroy(state: TestbedState) -> None:
    """Remove everything a testbed made: its processes, namespaces and state file."""
    for pid in state.pids.values():
        _kill(pid)
    for ns in (state.client_ns, state.origin_ns):
        # Processes started with `ip netns exec` by others may linger: kill them too.
        lingering = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for text in lingering:
            _kill(int(text))
        _run(["ip", "netns", "del", ns], check=False)
    with contextlib.suppress(FileNotFoundError):
        (state_dir() / f"{state.name}.json").unlink()
    with contextlib.suppress(FileNotFoundError):
        (state_dir() / f"{state.name}.stats").unlink()
    shutil.rmtree(state_dir() / state.name, ignore_errors=True)


def down(name: str | None = None) -> list[str]:
    """Remove the named testbed, or all of them; returns the names removed."""
    removed = []
    for state in list_states():
        if name is None or state.name == name:
            destroy(state)
            removed.append(state.name)
    # Namespaces whose state file was lost: remove by name.
    if name is None:
        for ns in _run(["ip", "netns", "list"], check=False).stdout.split("\n"):
            ns_name = ns.split(" ")[0]
            if ns_name.startswith(NAME_PREFIX) and ns_name[-2:] in ("-c", "-o"):
                _run(["ip", "netns", "del", ns_name], check=False)
                removed.append(ns_name)
    return removed


def _free_index() -> int:
    used = {s.index for s in list_states()}
    for index in range(1, 255):
        if index not in used:
            return index
    raise TestbedUnavailable("all 254 testbed address blocks are in use")


def _can_chrt() -> bool:
    return shutil.which("chrt") is not None and (
        subprocess.run(["chrt", "-f", "50", "true"], capture_output=True).returncode == 0
    )


class Testbed:
    """A testbed's lifetime: ``with Testbed(LinkSpec(0.08, 100e6)) as tb: ...``."""

    def __init__(
        self,
        link: LinkSpec,
        *,
        name: str | None = None,
        origin_cc: str = "cubic",
        client_cc: str = "cubic",
        origin_ssai: bool = True,
        socket_buffer_max: int = 32 * 1024 * 1024,
    ) -> None:
        self.link = link
        self.socket_buffer_max = socket_buffer_max
        self.name = name or f"{NAME_PREFIX}{secrets.token_hex(2)}"
        self.origin_cc = origin_cc
        self.client_cc = client_cc
        self.origin_ssai = origin_ssai
        self.state: TestbedState | None = None
        self._link_proc: subprocess.Popen[str] | None = None

    # -- addresses ----------------------------------------------------------------------
    @property
    def st(self) -> TestbedState:
        if self.state is None:
            raise RuntimeError("testbed is not up")
        return self.state

    @property
    def client_ns(self) -> str:
        return self.st.client_ns

    @property
    def origin_ns(self) -> str:
        return self.st.origin_ns

    @property
    def client_addr(self) -> str:
        return self.st.client_addr

    @property
    def origin_addr(self) -> str:
        return self.st.origin_addr

    @property
    def stats_path(self) -> Path:
        return state_dir() / f"{self.name}.stats"

    # -- lifecycle ------------------------------------------------------------------------
    def up(self, timeout: float = 15.0) -> Testbed:
        check_available()
        state_dir().mkdir(parents=True, exist_ok=True)
        index = _free_index()
        state = TestbedState(
            name=self.name,
            index=index,
            client_ns=f"{self.name}-c",
            origin_ns=f"{self.name}-o",
            client_addr=f"198.18.{index}.1",
            origin_addr=f"198.18.{index}.2",
            link={
                "rtt": self.link.rtt,
                "rate_bps": self.link.rate_bps,
                "queue_bytes": self.link.effective_queue,
                "loss": self.link.loss,
            },
            origin_cc=self.origin_cc,
            origin_ssai=int(self.origin_ssai),
            owner_pid=os.getpid(),
        )
        self.state = state
        self._save()
        try:
            for ns in (state.client_ns, state.origin_ns):
                _run(["ip", "netns", "add", ns])
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(
                [
                    *netns_exec(state.origin_ns),
                    "sysctl",
                    "-q",
                    "-w",
                    f"net.ipv4.tcp_slow_start_after_idle={int(self.origin_ssai)}",
                ]
            )
            # A new namespace gets the kernel's default buffer limits (4 MiB send), below
            # the BDP of long fast paths (200 ms x 200 Mbit/s = 5 MB): then the buffer, not
            # cwnd, would cap throughput. Autotuning still starts small.
            for ns in (state.client_ns, state.origin_ns):
                _run(
                    [
                        *netns_exec(ns),
                        "sysctl",
                        "-q",
                        "-w",
                        f"net.ipv4.tcp_wmem=4096 16384 {self.socket_buffer_max}",
                        f"net.ipv4.tcp_rmem=4096 131072 {self.socket_buffer_max}",
                    ]
                )
            self._start_link(timeout)
        except BaseException:
            self.down()
            raise
        return self

    def _start_link(self, timeout: float) -> None:
        st = self.st
        argv = [
            sys.executable,
            "-m",
            "cwndproxy.lab.testbed.link",
            "--a-dev",
            f"{self.name}-c0",
            "--a-ns",
            st.client_ns,
            "--a-addr",
            st.client_addr,
            "--a-congctl",
            self.client_cc,
            "--o-dev",
            f"{self.name}-o0",
            "--o-ns",
            st.origin_ns,
            "--o-addr",
            st.origin_addr,
            "--o-congctl",
            self.origin_cc,
            "--rtt-ms",
            str(self.link.rtt * 1000),
            "--rate-mbit",
            str(self.link.rate_bps / 1e6),
            "--queue-bytes",
            str(self.link.effective_queue),
            "--loss",
            str(self.link.loss),
            "--stats",
            str(self.stats_path),
        ]
        if _can_chrt():
            # Real-time priority keeps the emulator's timing tight on a busy 2-core machine.
            argv = ["chrt", "-f", "50", *argv]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self._link_proc = proc
        self.st.pids["link"] = proc.pid
        self._save()
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline().strip()
            if line == "ready" or proc.poll() is not None or line.startswith("error"):
                break
        if line != "ready":
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            raise TestbedUnavailable(f"link emulator did not start: {line} {err}".strip())

    def down(self) -> None:
        if self.state is not None:
            destroy(self.state)
            self.state = None
        if self._link_proc is not None:
            with contextlib.suppress(Exception):
                self._link_proc.wait(timeout=5)
            for stream in (self._link_proc.stdout, self._link_proc.stderr):
                if stream is not None:
                    stream.close()
            self._link_proc = None

    def _save(self) -> None:
        path = state_dir() / f"{self.name}.json"
        path.write_text(json.dumps(asdict(self.st), indent=2))

    def __enter__(self) -> Testbed:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # -- running things inside ---------------------------------------------------------
    def popen(
        self, side: str, argv: Sequence[str], *, register: str | None = None, **kwargs: object
    ) -> subprocess.Popen[bytes]:
        """Start a process in the client ("c") or origin ("o") namespace."""
        ns = self.client_ns if side == "c" else self.origin_ns
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            [*netns_exec(ns), *argv], start_new_session=True, **kwargs
        )
        if register:
            self.st.pids[register] = proc.pid
            self._save()
        return proc

    def run(
        self, side: str, argv: Sequence[str], timeout: float = 120.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        ns = self.client_ns if side == "c" else self.origin_ns
        return subprocess.run(
            [*netns_exec(ns), *argv], capture_output=True, text=True, timeout=timeout, check=check
        )

    def listens(self, side: str, port: int) -> bool:
        out = self.run(side, ["ss", "-Hltn", f"sport = :{port}"], timeout=5).stdout
        return bool(out.strip())

    def wait_listening(self, side: str, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.listens(side, port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"nothing listens on port {port} in the {side} namespace")

    def start_proxy(
        self,
        args: Sequence[str],
        *,
        listen: str = "127.0.0.1:8080",
        register: str = "proxy",
        log: Path | None = None,
        tui: bool = False,
        wait: float | None = 30.0,
    ) -> subprocess.Popen[bytes]:
        """``cwnd-proxy run`` in the client namespace, listening on ``listen``; returns once
        it listens (``wait`` seconds at most; None: at once). Its output goes to ``log``
        (stderr) or nowhere; with ``tui`` it keeps this terminal for its dashboard."""
        argv = cwnd_proxy_argv("run", *([] if tui else ["--no-tui"]), "--listen", listen, *args)
        quiet = None if tui else subprocess.DEVNULL
        proc = self.popen(
            "c",
            argv,
            register=register,
            stdout=quiet,
            stderr=open(log, "wb") if log else quiet,  # noqa: SIM115 - owned by the process
        )
        if wait is not None:
            try:
                self.wait_listening("c", int(listen.rsplit(":", 1)[1]), timeout=wait)
            except TimeoutError:
                proc.kill()
                raise
        return proc

    def curl_times(self, *args: str, timeout: float = 60.0) -> tuple[float, float]:
        """curl ARGS in the client namespace, body discarded: (time to first byte, time to
        the last), in seconds; RuntimeError with curl's message if it fails."""
        argv = ["curl", "-s", "-S", "-f", "-o", "/dev/null"]
        r = self.run("c", [*argv, "-w", "%{time_starttransfer} %{time_total}", *args], timeout)
        if r.returncode != 0:
            raise RuntimeError(f"curl failed: {r.stderr.strip()}")
        first, last = r.stdout.split()
        return float(first), float(last)

    def run_cwnd_proxy(
        self, command: str, *args: str, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """``cwnd-proxy COMMAND ARGS`` (e.g. ``probe``) in the client namespace, to the end."""
        return self.run("c", cwnd_proxy_argv(command, *args), timeout=timeout)

    def observer(
        self, port: int | Sequence[int], interval: float, *, side: str = "o"
    ) -> WindowObserver:
        """A started ``ss`` sampler of the kernel's view: in the origin namespace, the
        server's sockets on ``port``; in the client namespace, the sockets to ``port``."""
        ns = self.client_ns if side == "c" else self.origin_ns
        argv = ss_command(port, netns_exec(ns), peer=side == "c")
        return WindowObserver(argv, interval=interval).start()

    def link_stats(self) -> dict[str, object]:
        try:
            data: dict[str, object] = json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def device_drops(self) -> dict[str, int]:
        """Kernel drop counters of both TUN devices (must stay 0: drops belong to the
        modelled queue only)."""
        drops: dict[str, int] = {}
        for ns, dev in ((self.client_ns, f"{self.name}-c0"), (self.origin_ns, f"{self.name}-o0")):
            out = _run(["ip", "-n", ns, "-j", "-s", "link", "show", dev], check=False).stdout
            with contextlib.suppress(ValueError, IndexError, KeyError):
                info = json.loads(out)[0]["stats64"]
                drops[dev] = int(info["rx"]["dropped"]) + int(info["tx"]["dropped"])
        return drops

    def cpu_seconds(self, name: str = "link") -> float:
        """CPU time (user + system) used so far by a registered process."""
        pid = self.st.pids[name]
        with contextlib.suppress(OSError):
            # chrt execs the emulator, so the pid is the emulator itself.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            return (int(fields[11]) + int(fields[12])) / ticks
        return 0.0
