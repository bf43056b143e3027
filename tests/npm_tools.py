"""What the Node.js and web tests need from npm: whether it can be used here, and why not (the skip reason)."""

from __future__ import annotations

import functools
import shutil
import subprocess


@functools.cache
def npm_missing(need_node: bool = False) -> str | None:
    """Why npm (and node, with `need_node`) cannot be used here, or None: not installed, or the registry does not
    answer `npm ping`."""
    for tool in ("npm", *(["node"] if need_node else [])):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install nodejs npm)"
    try:
        ping = subprocess.run(["npm", "ping"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "the npm registry did not answer `npm ping` within 60 s"
    if ping.returncode != 0:
        lines = [line for line in (ping.stderr + ping.stdout).splitlines() if line.strip()]
        return f"the npm registry is unreachable (`npm ping`: {lines[-1] if lines else ping.returncode})"
    return None
