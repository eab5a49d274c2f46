"""20 terminals on one machine: how long from an opt-out request to the last terminal's deletion receipt.

Starts `facepay-backoffice dev` (nats-server, a throwaway PostgreSQL cluster, the web server), provisions N
terminals, enrols one card at every other terminal (through Terminal.enrol), starts N agents as separate
processes with their own data folders, then for each round posts the card's opt-out code to
POST /api/optout and polls GET /api/revocations/ID every 10 ms until it says done (no terminal pending).

    .venv/bin/python benchmarks/fleet_optout.py --terminals 20 --rounds 10     (make bench-fleet)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.fleet import Fleet, enrol_direct, provision_many, shopper_count, wait_for  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--terminals", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    tids = [f"bench-{i:02d}" for i in range(1, a.terminals + 1)]
    with tempfile.TemporaryDirectory(prefix="facepay-bench-fleet-") as tmp:
        fleet = Fleet(Path(tmp) / "bo", optout_rate="100000/60")
        try:
            t0 = time.monotonic()
            cfgs = provision_many(fleet, tids, heartbeat_s=5.0)
            holders = tids[::2]
            codes = []
            for r in range(a.rounds):
                uid = bytes.fromhex(f"04{r:06X}")
                for t in holders:
                    c = enrol_direct(cfgs[t], fleet.data_dir(t), uid, seed=r * 100 + tids.index(t))
                    if t == holders[0]:
                        codes.append(c)
            for t in tids:
                fleet.start_agent(t)
            wait_for(lambda: fleet.sql("SELECT count(*) FROM optout_codes")[0][0] == a.rounds * len(holders), 180,
                     "every enrolment link at the back office")
            wait_for(lambda: fleet.sql("SELECT count(*) FROM terminals WHERE last_heartbeat IS NOT NULL")[0][0]
                     == len(tids), 180, "a heartbeat from every terminal")
            print(f"set up {len(tids)} terminals in {time.monotonic() - t0:.0f} s", flush=True)
            client, server = [], []
            for r, code in enumerate(codes):
                start = time.monotonic()
                status, body = fleet.http("POST", "/api/optout", {"code": code})
                assert status == 202, body
                rid = body["revocation_id"]
                while fleet.http("GET", f"/api/revocations/{rid}")[1]["status"] != "done":  # the shopper's view
                    time.sleep(0.01)
                client.append(time.monotonic() - start)
                states = fleet.receipts(rid)
                server.append(fleet.sql("SELECT EXTRACT(EPOCH FROM max(s.updated_at) - r.requested_at) FROM "
                                        "revocation_states s JOIN revocations r ON r.id = s.revocation_id "
                                        "WHERE r.id = %s GROUP BY r.requested_at", rid)[0][0])
                assert list(states.values()).count("deleted") == len(holders), states
                print(f"round {r + 1}: {client[-1] * 1000:.0f} ms to the last of {len(states)} receipts", flush=True)
            assert all(shopper_count(cfgs[t], fleet.data_dir(t)) == 0 for t in holders)
        finally:
            fleet.close()
    load = os.getloadavg()[0]
    print(f"\n{a.terminals} terminals, {a.rounds} opt-outs, {len(holders)} holders each; load average {load:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"request -> last receipt (client, polling 10 ms): median {statistics.median(client) * 1000:.0f} ms, "
          f"max {max(client) * 1000:.0f} ms")
    print(f"request stored -> last receipt stored (server clock): median {statistics.median(server) * 1000:.0f} ms, "
          f"max {float(max(server)) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
