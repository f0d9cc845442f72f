"""Headless chromium for the report tests: find the browser (installing Debian's ``chromium``
once with apt-get when it is missing and we run as root, as CI does on a fresh machine), render a
page after its scripts ran (``--dump-dom``), take a screenshot, and collect console errors."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000")


def find_browser() -> str | None:
    """The first chromium-like browser on PATH, or ``None``."""
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _install() -> str:
    """``apt-get install -y chromium`` (after ``apt-get update`` if the first try fails; a
    step stalled for 5 minutes gives up at once); the reason when it could not be installed,
    else ``""``."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    for before in ([], [["apt-get", "update"]]):
        try:
            for step in [*before, command]:
                subprocess.run(step, check=True, capture_output=True, timeout=300, env=env)
            return ""
        except subprocess.TimeoutExpired as err:  # a stalled mirror: no second try
            return f"apt-get could not install chromium ({err})"
        except (subprocess.CalledProcessError, OSError) as err:
            reason = f"apt-get could not install chromium ({err})"
    return reason


def browser() -> str:
    """The browser's path; installs chromium when missing and root, else skips the test."""
    found = find_browser()
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium on PATH and not root with apt-get to install it "
                    "(apt-get install chromium)")
    reason = _install()
    found = find_browser()
    if not found:
        pytest.skip(reason or "chromium installed but not found on PATH")
    return found


def _run(exe: str, profile: Path, args: list[str], url: str) -> subprocess.CompletedProcess:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args, url],
                          capture_output=True, text=True, timeout=120)


def dump_dom(exe: str, page: Path, profile: Path, fragment: str = "") -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran, and the console messages it logged."""
    proc = _run(exe, profile, ["--dump-dom"], page.resolve().as_uri() + fragment)
    return proc.stdout, console_lines(proc.stderr)


def screenshot(exe: str, page: Path, profile: Path, png: Path,
               size: tuple[int, int] = (1280, 2200)) -> list[str]:
    """Save a screenshot of ``page`` to ``png``; returns the console messages logged."""
    proc = _run(exe, profile, [f"--screenshot={png}", f"--window-size={size[0]},{size[1]}"],
                page.resolve().as_uri())
    return console_lines(proc.stderr)


def console_lines(stderr: str) -> list[str]:
    """The page's console messages and uncaught errors in chromium's log."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
