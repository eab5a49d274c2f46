"""`make fleet-demo`: the servers, the back office and three terminals (one kiosk window, two agents) on one machine.

Stops everything it started, by pid, when the kiosk window closes or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m backoffice.demo")
    p.add_argument("--workdir", type=Path, default=Path("fleet-demo"))
    p.add_argument("--listen", default="127.0.0.1:8080")
    args = p.parse_args(argv)
    run = args.workdir / time.strftime("run-%Y%m%d-%H%M%S")
    run.mkdir(parents=True)
    py = sys.executable
    procs: list[subprocess.Popen] = []

    def interrupted(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)  # also when started in the background, where SIGINT is ignored
    try:
        dev = subprocess.Popen([py, "-m", "backoffice.cli", "--workdir", str(run / "backoffice"), "dev",
                                "--listen", args.listen], stdout=subprocess.PIPE, text=True)
        procs.append(dev)
        line = dev.stdout.readline()
        if not line:
            print("the back office did not start", file=sys.stderr)
            return 1
        info = json.loads(line)
        staff = json.loads((run / "backoffice" / "staff.json").read_text())
        for tid in ("till-1", "till-2", "till-3"):
            subprocess.run([py, "-m", "backoffice.cli", "--workdir", str(run / "backoffice"), "provision",
                            "--terminal-id", tid, "--out", str(run / f"{tid}.toml")], check=True)
        for tid in ("till-2", "till-3"):
            procs.append(subprocess.Popen([py, "-m", "terminal", "--config", str(run / f"{tid}.toml"),
                                           "--data-dir", str(run / f"data-{tid}"), "agent"]))
        print(f"\nback office: {info['web']}  (staff: {staff['username']} / {staff['password']})\n"
              f"opt-out page: {info['web']}/   NATS: {info['nats']}\n"
              f"terminals: till-1 (the kiosk window), till-2 and till-3 (agents); folder {run}\n", flush=True)
        kiosk = subprocess.Popen([py, "-m", "terminal", "--config", str(run / "till-1.toml"),
                                  "--data-dir", str(run / "data-till-1"), "run", "--demo"])
        procs.append(kiosk)
        kiosk.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
