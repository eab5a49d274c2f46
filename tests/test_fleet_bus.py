"""Issue 14: the back office's ingest keeps going when its pull subscription goes deaf.

A real nats-server (JetStream, loopback, free port, temp folder) and a throwaway PostgreSQL cluster; the
back office's Bus runs in this process.  The sabotage is what a lost subscription looks like from the
server's side after a reconnect: the server drops the client's interest in its inbox (a protocol UNSUB),
while the client still believes it is subscribed and its fetches just time out.
"""

import asyncio
import json
import logging

import pytest

from backoffice import bus as bus_mod
from backoffice import db, servers
from tests.helpers.fleet import deafen_pull_subscriptions

# make test: on one worker, one set of servers for the module
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet_bus")]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    work = tmp_path_factory.mktemp("bus")
    port = servers.free_port()
    conf = work / "nats.conf"
    conf.write_text(json.dumps({"listen": f"127.0.0.1:{port}", "jetstream": {"store_dir": str(work / "js")}}))
    nats_proc = servers.start_nats(conf, port, work / "nats.log")
    try:
        pg = servers.PgCluster(work, servers.free_port())
        try:
            url = pg.start()
            db.migrate(url)
            yield f"nats://127.0.0.1:{port}", url
        finally:
            pg.stop()
    finally:  # also when PostgreSQL's start or stop fails, or a Ctrl-C cuts it short
        servers.stop_pid(nats_proc.pid)


def _sale(i: int) -> bytes:
    return json.dumps({"sale_id": f"s{i}", "created_at": "2026-11-28T12:00:00+00:00", "amount_minor": 100 + i,
                       "currency": "EUR", "method": "card", "training": 0, "status": "approved",
                       "settled_at": "2026-11-28T12:00:00+00:00"}).encode()


async def _has_sales(url: str, n: int) -> bool:
    conn = await db.connect(url)
    try:
        return (await (await conn.execute("SELECT count(*) FROM sales")).fetchone())[0] >= n
    finally:
        await conn.close()


async def _until(cond, timeout: float, what: str):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await cond():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_ingest_subscribes_again_when_its_fetches_go_nowhere(engines, caplog, monkeypatch):
    import nats

    nats_url, db_url = engines
    monkeypatch.setattr(bus_mod, "STALL_S", 2.0)

    async def go():
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        b = bus_mod.Bus(nats_url, db_url, signing_key=Ed25519PrivateKey.generate())
        await b.start()
        terminal = await nats.connect(nats_url)
        js = terminal.jetstream()
        try:
            for i in range(3):
                await js.publish("facepay.t.till-01.sale", _sale(i), headers={"Nats-Msg-Id": f"sale:s{i}"})
            await _until(lambda: _has_sales(db_url, 3), 20, "the first 3 sales")
            assert await deafen_pull_subscriptions(b.nc) >= 1, "no pull subscription inboxes found"
            for i in range(3, 10):
                await js.publish("facepay.t.till-01.sale", _sale(i), headers={"Nats-Msg-Id": f"sale:s{i}"})
            await _until(lambda: _has_sales(db_url, 10), 40, "the 7 sales published after the subscription went deaf")
        finally:
            await terminal.close()
            await b.stop()

    with caplog.at_level(logging.WARNING, logger="facepay.backoffice"):
        asyncio.run(go())
    assert any("events wait in the stream but none arrived" in r.getMessage() for r in caplog.records)
