"""The fleet fixtures stop every process they started, by pid, even when the teardown itself goes wrong."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from backoffice.servers import running
from tests.helpers.fleet import Fleet

IGNORES_SIGTERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                   "time.sleep(600)")


class InterruptedWait(subprocess.Popen):
    """A child whose orderly stop is cut short by Ctrl-C: the first timed wait raises KeyboardInterrupt."""

    interrupted = False

    def wait(self, timeout=None):
        if timeout is not None and not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return super().wait(timeout)


@pytest.mark.slow
def test_close_stops_everything_when_dev_was_killed_and_the_teardown_is_interrupted(tmp_path):
    fleet = Fleet(tmp_path / "bo")
    nats_pid = fleet.nats_pid()
    pg_pid = int((fleet.workdir / "postgres.pid").read_text().split()[0])
    pg_dir = (fleet.workdir / "pg").resolve()
    assert running(nats_pid) and running(pg_pid)
    # an "agent" that ignores SIGTERM and whose stop is interrupted, and a second one that behaves
    stuck = InterruptedWait([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True)
    calm = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    assert stuck.stdout.readline() == "ready\n"
    fleet.agents.update({"stuck": stuck, "calm": calm})
    fleet._started += [stuck, calm]
    # `dev` dies without its own clean-up: its nats-server and PostgreSQL (sessions of their own) live on
    os.kill(fleet.proc.pid, signal.SIGKILL)
    fleet.proc.wait(10)
    assert running(nats_pid) and running(pg_pid)

    with pytest.raises(KeyboardInterrupt):
        fleet.close()
    stuck.stdout.close()
    assert stuck.returncode == -signal.SIGKILL and calm.returncode is not None
    assert not [p for p in (nats_pid, pg_pid, stuck.pid, calm.pid) if running(p)]
    if pg_dir != fleet.workdir / "pg":  # as root the cluster lives in a temp folder: removed as dev would have
        assert not pg_dir.exists()
    fleet.close()  # a second call does nothing
