"""Issue 14: an opt-out made at the back office reaches every terminal's agent; each deletes and answers."""

import pytest

from tests.helpers.fleet import Fleet, enrol_direct, shopper_count, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    f = Fleet(tmp_path_factory.mktemp("fleet") / "bo")
    yield f
    f.close()


def test_optout_code_reaches_every_agent(fleet):
    tids = ["opt-a", "opt-b", "opt-c"]
    cfgs = {t: fleet.provision(t) for t in tids}
    uid = bytes.fromhex("04AABBCC")
    code = enrol_direct(cfgs["opt-a"], fleet.data_dir("opt-a"), uid, seed=1)
    enrol_direct(cfgs["opt-b"], fleet.data_dir("opt-b"), uid, seed=2)
    other = enrol_direct(cfgs["opt-b"], fleet.data_dir("opt-b"), bytes.fromhex("04DDEEFF"), seed=3)
    assert other != code
    for t in tids:
        fleet.start_agent(t)
    # the enrolment links reach the back office before the code can be honoured
    wait_for(lambda: fleet.sql("SELECT count(*) FROM optout_codes")[0][0] == 3, 30, "enrolment links")

    status, body = fleet.http("POST", "/api/optout", {"code": code.lower().replace("-", " ")})
    assert status == 202 and body["revocation_id"].startswith("rev_")
    rid = body["revocation_id"]

    def done():
        s, b = fleet.http("GET", f"/api/revocations/{rid}")
        return b["terminals"] if s == 200 and "pending" not in b["terminals"].values() else None

    states = wait_for(done, 30, "every terminal's receipt")
    assert states == {"opt-a": "deleted", "opt-b": "deleted", "opt-c": "none-held"}
    assert shopper_count(cfgs["opt-a"], fleet.data_dir("opt-a")) == 0
    assert shopper_count(cfgs["opt-b"], fleet.data_dir("opt-b")) == 1  # the other card's enrolment stays

    # an unknown code gets the same answer; every terminal reports none-held
    status, body = fleet.http("POST", "/api/optout", {"code": "AAAA-BBBB-CCCC-DDDD"})
    assert status == 202
    rid2 = body["revocation_id"]
    wait_for(lambda: "pending" not in fleet.http("GET", f"/api/revocations/{rid2}")[1]["terminals"].values(), 30,
             "receipts for an unknown code")
    assert set(fleet.http("GET", f"/api/revocations/{rid2}")[1]["terminals"].values()) == {"none-held"}
    assert fleet.http("GET", "/api/revocations/rev_nosuch")[0] == 404
    assert fleet.http("POST", "/api/optout", {"nocode": 1})[0] == 400
