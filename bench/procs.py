"""Process groups: start a system's workers in their own session, measure their tree, kill all of it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil


class Group:
    """A command started as the leader of a new session, so one killpg reaches every child."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.cmd = cmd
        self.log = log
        self._log = open(log, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._seen: dict[int, psutil.Process] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tree(self) -> list[psutil.Process]:
        """The leader and every descendant alive now (remembered, so kill() finds them even if reparented)."""
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            self._seen.setdefault(p.pid, p)
        return procs

    def rss(self) -> int:
        """Total RSS of the tree, bytes (shared pages are counted in every process, as `ps` does)."""
        total = 0
        for p in self.tree():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def pss(self) -> int:
        """Total PSS of the tree, bytes: shared pages divided among the processes that share them."""
        total = 0
        for p in self.tree():
            try:
                total += p.memory_full_info().pss
            except (psutil.Error, AttributeError):
                pass
        return total

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the whole group and to every process ever seen in the tree; reap the leader."""
        self.tree()
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        for p in self._seen.values():
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass
        if sig == signal.SIGKILL:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            _wait_dead(list(self._seen.values()), timeout=5)
            self._log.close()

    def tail(self, lines: int = 15) -> str:
        """The end of the group's output, for error reports."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, *_: object) -> None:
        self.kill()


def _wait_dead(processes: list[psutil.Process], timeout: float) -> None:
    """Wait until every process is gone or a zombie (orphans wait for init to reap them, which can take a second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for p in processes:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        if not alive:
            return
        processes = alive
        time.sleep(0.01)


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> str:
    """Run a short command in its own session; its stdout, or RuntimeError with its output."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        start_new_session=True, text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"{' '.join(cmd)}: no answer in {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{err[-2000:]}")
    return out
