"""The benchmark's load: the bodies each protocol is sent, wrk scripts for them, and wrk's results."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = [5.1, 3.5, 1.4, 0.2]
FORM = "&".join(f"{c}={v}" for c, v in zip(COLUMNS, ROW, strict=True))
BATCH_ROWS = 100


def _batch_rows(n: int = BATCH_ROWS) -> list[list[float]]:
    """Iris-like rows of all three classes, the same every run."""
    base = ([5.1, 3.5, 1.4, 0.2], [6.0, 2.7, 4.5, 1.4], [6.7, 3.0, 5.6, 2.2])
    return [[round(v + 0.01 * (i // 3), 2) for v in base[i % 3]] for i in range(n)]


def _lua(body: str, content_type: str) -> str:
    # A level-2 long bracket: a JSON body holds "]]" (nested arrays), which would end a plain [[...]].
    return f'wrk.method = "POST"\nwrk.body = [==[{body}]==]\nwrk.headers["Content-Type"] = "{content_type}"\n'


def _oip(rows: list[list[float]]) -> str:
    return json.dumps({"inputs": [{"name": "predict", "shape": [len(rows), len(COLUMNS)], "datatype": "FP64",
                                   "data": [v for r in rows for v in r]}]})


def _split(rows: list[list[float]]) -> str:
    return json.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows}})


@dataclass(frozen=True)
class Load:
    path: str
    body: str
    content_type: str
    rows: int = 1

    @property
    def script(self) -> str:  # for wrk
        return _lua(self.body, self.content_type)

    def check(self, url: str) -> None:
        """One request first: a setup that answers the body with an error is a broken benchmark."""
        r = httpx.post(url + self.path, content=self.body, headers={"Content-Type": self.content_type}, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"POST {self.path} answered {r.status_code}: {r.text[:300]}")


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def apt_install(package: str) -> None:
    """``apt-get install`` one Debian package (as root, or through sudo)."""
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", package], check=True, env=env, stdout=subprocess.DEVNULL)


def ensure_tool(command: str, package: str) -> str:
    """The path of ``command``, installing its Debian ``package`` with apt-get when it is missing."""
    path = shutil.which(command)
    if path:
        return path
    print(f"{command} not found; installing {package} with apt-get", file=sys.stderr)
    apt_install(package)
    path = shutil.which(command)
    if not path:
        raise SystemExit(f"error: {command} could not be installed (apt-get install {package})")
    return path


def ensure_wrk() -> str:
    return ensure_tool("wrk", "wrk")


def _to_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    if not m:
        raise ValueError(f"unparsable wrk latency {value!r}")
    number, unit = float(m[1]), m[2]
    return number * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url: str, seconds: int, connections: int, script: Path) -> WrkResult:
    out = subprocess.run(
        [ensure_wrk(), f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
         "-s", str(script), url],
        check=True, capture_output=True, text=True,
    ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> WrkResult:
    """wrk's --latency report (its duration may be in seconds or minutes: "1.00m")."""
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not (total and rps and p50 and p99):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return WrkResult(
        requests=int(total[1]), seconds=_to_ms(total[2] + total[3]) / 1000, rps=float(rps[1]), p50_ms=_to_ms(p50[1]),
        p99_ms=_to_ms(p99[1]), non_2xx=int(non2xx[1]) if non2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
    )
