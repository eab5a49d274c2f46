"""The back office's web pages against a real back office (`facepay-backoffice dev`: nats-server, PostgreSQL,
uvicorn on loopback): headers, the Origin check, CSRF tokens, server-side sessions, login throttling, proxy
headers, what the public opt-out status tells, and the dashboard.  Browser tests drive Debian's chromium."""

from __future__ import annotations

import hashlib
import http.client
import http.cookiejar
import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers.fleet import ROOT, Fleet, _env, chromium, wait_for

# make test: on one worker, one set of servers for the module
pytestmark = pytest.mark.xdist_group("backoffice_web")

OPTOUT_RATE = 5


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with Fleet(tmp_path_factory.mktemp("web") / "backoffice", optout_rate=f"{OPTOUT_RATE}/60",
               extra_args=("--trusted-proxy", "127.0.0.1")) as f:
        yield f


def add_staff(fleet, user: str, password: str) -> None:
    from backoffice import db
    from backoffice.web import hash_password

    db.set_staff(fleet.db, user, hash_password(password))


def raw(fleet, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
        source: str = "127.0.0.1"):
    """One request from a chosen loopback address (127.0.0.2 is not a trusted proxy): (status, headers, body)."""
    port = int(fleet.web.rsplit(":", 1)[1])
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.getheaders(), r.read().decode()
    finally:
        c.close()


def login_form(fleet, opener=None):
    """(opener with cookies, CSRF token of the login form)."""
    opener = opener or urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    html = opener.open(fleet.web + "/login", timeout=10).read().decode()
    return opener, re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def post_login(fleet, user: str, password: str, xff: str | None = None) -> int:
    opener, token = login_form(fleet)
    headers = {"Origin": fleet.web, **({"X-Forwarded-For": xff} if xff else {})}
    data = urllib.parse.urlencode({"csrf_token": token, "username": user, "password": password}).encode()
    try:
        r = opener.open(urllib.request.Request(fleet.web + "/login", data=data, headers=headers), timeout=10)
        return 200 if r.url.endswith("/dashboard") else 0
    except urllib.error.HTTPError as e:
        return e.code


# -- headers, banner, redirects ---------------------------------------------------------------------
def test_every_page_carries_the_security_headers_and_no_server_banner(fleet):
    opener, _post = fleet.staff_login()
    pages = ["/", "/login", "/api/revocations/rev_nosuch", "/nosuch"]
    seen = []
    for path in pages:
        status, headers, _ = raw(fleet, "GET", path)
        seen.append((path, status, {k.lower(): v for k, v in headers}))
    r = opener.open(fleet.web + "/dashboard", timeout=10)
    seen.append(("/dashboard", r.status, {k.lower(): v for k, v in r.headers.items()}))
    for path, _status, h in seen:
        assert "server" not in h, (path, h)
        csp = h["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "'unsafe-inline'" not in csp
        assert h["x-content-type-options"] == "nosniff", path
        assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "same-origin", path
        assert h["cache-control"] == "no-store", path


def test_staff_redirects_to_the_login_or_the_dashboard_and_the_public_page_links_the_login(fleet):
    status, headers, _ = raw(fleet, "GET", "/staff")
    assert status == 303 and dict(headers)["location"] == "/login"
    opener, _post = fleet.staff_login()
    assert opener.open(fleet.web + "/staff", timeout=10).url.endswith("/dashboard")
    assert opener.open(fleet.web + "/login", timeout=10).url.endswith("/dashboard")  # already logged in
    assert 'href="/login"' in raw(fleet, "GET", "/")[2]


# -- Origin check and CSRF tokens (without a browser) ------------------------------------------------
def test_a_post_from_another_origin_or_without_its_token_is_refused(fleet):
    opener, token = login_form(fleet)
    staff = fleet.staff()
    data = urllib.parse.urlencode({"csrf_token": token, **staff}).encode()
    for origin in ("http://evil.example", "null", fleet.web.replace("127.0.0.1", "localhost")):
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(urllib.request.Request(fleet.web + "/login", data=data, headers={"Origin": origin}))
        assert e.value.code == 403 and "another site" in e.value.read().decode()
    with pytest.raises(urllib.error.HTTPError) as e:  # a Referer from elsewhere counts as its origin
        opener.open(urllib.request.Request(fleet.web + "/login", data=data,
                                           headers={"Referer": "http://evil.example/page"}))
    assert e.value.code == 403
    # right origin, no token / a token signed by someone else / another browser's token: refused
    for bad in ("", "x", login_form(fleet)[1]):
        body = urllib.parse.urlencode({"csrf_token": bad, **staff}).encode()
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(urllib.request.Request(fleet.web + "/login", data=body, headers={"Origin": fleet.web}))
        assert e.value.code == 403 and "security token" in e.value.read().decode()
    # the public JSON API: another origin is refused, and a form's content type is not accepted
    body = json.dumps({"code": "AAAA-BBBB-CCCC-DDDD"}).encode()
    assert raw(fleet, "POST", "/api/optout", body, {"Content-Type": "application/json",
                                                    "Origin": "http://evil.example"})[0] == 403
    assert raw(fleet, "POST", "/api/optout", b"code=AAAA", {"Content-Type": "text/plain"})[0] == 415
    assert fleet.sql("SELECT count(*) FROM web_sessions")[0][0] >= 0  # the table exists (migrated)


# -- login throttling ---------------------------------------------------------------------------------
def test_wrong_passwords_lock_the_account_even_against_the_right_one(fleet):
    add_staff(fleet, "locked-out", "right password 1")
    add_staff(fleet, "bystander", "right password 2")
    codes = [post_login(fleet, "locked-out", f"wrong {i}") for i in range(5)]
    assert codes == [401] * 5
    assert post_login(fleet, "locked-out", "right password 1") == 429  # the attack: now refused
    assert fleet.sql("SELECT count(*) FROM web_sessions WHERE username = 'locked-out'")[0][0] == 0
    assert post_login(fleet, "bystander", "right password 2") == 200  # another account from the same client


def test_wrong_passwords_from_one_client_lock_that_client_only(fleet):
    """Via the trusted proxy (127.0.0.1 here) each X-Forwarded-For is its own client."""
    staff = fleet.staff()
    attacker = "203.0.113.7"
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda i: post_login(fleet, f"guess-{i}", "password", xff=attacker), range(20)))
    assert codes == [401] * 20
    assert post_login(fleet, staff["username"], staff["password"], xff=attacker) == 429
    assert post_login(fleet, staff["username"], staff["password"], xff="198.51.100.4") == 200


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(fleet):
    """The opt-out rate limit (5 a minute here): from 127.0.0.2, not a configured proxy, a new X-Forwarded-For
    on every request does not make a new client; from the proxy (127.0.0.1) it does."""
    def optout(source, xff):
        return raw(fleet, "POST", "/api/optout", json.dumps({"code": "ZZZZ-ZZZZ-ZZZZ-ZZZZ"}).encode(),
                   {"Content-Type": "application/json", "X-Forwarded-For": xff}, source=source)[0]

    spoofed = [optout("127.0.0.2", f"192.0.2.{i}") for i in range(OPTOUT_RATE + 1)]
    assert spoofed == [202] * OPTOUT_RATE + [429]
    proxied = [optout("127.0.0.1", f"192.0.2.{100 + i}") for i in range(OPTOUT_RATE + 1)]
    assert proxied == [202] * (OPTOUT_RATE + 1)


def test_trusted_proxy_must_be_an_address(tmp_path):
    import secrets

    key = tmp_path / "revocation-signing.key"
    key.write_text(secrets.token_hex(32))  # a good key: the proxy is what is wrong
    key.chmod(0o600)
    r = subprocess.run([sys.executable, "-m", "backoffice.cli", "serve", "--db", "postgresql://x", "--nats",
                        "nats://x", "--listen", "127.0.0.1:1", "--signing-key", str(key),
                        "--trusted-proxy", "proxy.example"],
                       capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "--trusted-proxy 'proxy.example' is not an IP address" in r.stderr


# -- sessions -----------------------------------------------------------------------------------------
def test_sessions_are_server_side_and_end_when_idle_or_the_password_is_set_again(fleet):
    add_staff(fleet, "idle", "idle password 1")
    opener, _post = fleet.staff_login("idle", "idle password 1")
    assert opener.open(fleet.web + "/dashboard", timeout=10).url.endswith("/dashboard")
    fleet.sql("UPDATE web_sessions SET seen_at = now() - interval '31 minutes' WHERE username = 'idle' RETURNING 1")
    assert opener.open(fleet.web + "/dashboard", timeout=10).url.endswith("/login")
    opener, _post = fleet.staff_login("idle", "idle password 1")
    add_staff(fleet, "idle", "idle password 2")  # `facepay-backoffice staff add` for an existing user
    assert opener.open(fleet.web + "/dashboard", timeout=10).url.endswith("/login")
    # a session cookie is a random token; the database holds only its hash
    opener, _post = fleet.staff_login("idle", "idle password 2")
    jar = next(h.cookiejar for h in opener.handlers if isinstance(h, urllib.request.HTTPCookieProcessor))
    token = next(c.value for c in jar if c.name == "fp_session")
    hashes = {r[0] for r in fleet.sql("SELECT token_hash FROM web_sessions WHERE username = 'idle'")}
    assert len(hashes) == 1 and token not in hashes and hashlib.sha256(token.encode()).hexdigest() in hashes


def _browser_login(page, fleet, user, password):
    page.goto(fleet.web + "/staff")
    page.get_by_label("Name").fill(user)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard")


def test_browser_logout_and_password_change_end_sessions(fleet, tmp_path):
    add_staff(fleet, "changer", "first password 1")
    with chromium() as browser:
        a, b = browser.new_context(), browser.new_context()
        pa, pb = a.new_page(), b.new_page()
        _browser_login(pa, fleet, "changer", "first password 1")
        _browser_login(pb, fleet, "changer", "first password 1")
        stolen = [c for c in a.cookies() if c["name"] == "fp_session"]
        assert stolen
        # logout ends the session on the server: the same cookie, replayed elsewhere, is worth nothing
        pa.get_by_role("button", name="Log out").click()
        pa.wait_for_url("**/login")
        c = browser.new_context()
        c.add_cookies(stolen)
        pc = c.new_page()
        pc.goto(fleet.web + "/dashboard")
        assert pc.url.endswith("/login")
        # a password change ends every session of the user, the other browser's too
        pb.get_by_role("link", name="Change password").click()
        pb.get_by_label("Current password").fill("first password 1")
        pb.get_by_label("New password (at least 10 characters)").fill("second password 2")
        pb.get_by_label("New password again").fill("second password 2")
        pb.screenshot(path=str(tmp_path / "password.png"))
        pb.get_by_role("button", name="Change password").click()
        pb.wait_for_url("**/login?changed=1")
        assert "Password changed" in pb.get_by_role("status").inner_text()
        _browser_login(pa, fleet, "changer", "second password 2")
        pa.goto(fleet.web + "/logout")  # GET does not log out (405): only the form's POST does
        pa.goto(fleet.web + "/dashboard")
        assert pa.url.endswith("/dashboard")
    assert post_login(fleet, "changer", "first password 1") == 401
    assert fleet.sql("SELECT count(*) FROM web_sessions WHERE username = 'changer'")[0][0] == 1  # pa's new one


ATTACKER_PAGE = """<!doctype html><html><body>
<form id="f" method="post" action="{web}/terminals/{tid}/mode"><input name="mode" value="card_only">
<input name="csrf_token" value="guessed"></form>
<script>document.getElementById("f").submit();</script></body></html>"""


def test_browser_csrf_from_another_origin_and_a_missing_token_are_refused(fleet, tmp_path):
    """127.0.0.1 on another port is the same *site*, so SameSite cookies go along: the Origin check and the
    token are what stop it."""
    import http.server
    import threading

    tid = "csrf-t"
    fleet.provision(tid)
    fleet.sql("UPDATE terminals SET wanted_mode = 'normal' WHERE id = %s RETURNING 1", tid)
    page_html = ATTACKER_PAGE.format(web=fleet.web, tid=tid).encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page_html)

        def log_message(self, *a):
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    staff = fleet.staff()
    try:
        with chromium() as browser:
            page = browser.new_page()
            _browser_login(page, fleet, staff["username"], staff["password"])
            answers = []
            page.on("response", lambda r: answers.append((r.url, r.status)) if "/mode" in r.url else None)
            page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
            wait_for(lambda: answers, 10, "the forged post's answer")
            assert answers[-1][1] == 403 and "another site" in page.content()
            # same origin, the token taken out of the form: refused too
            page.goto(fleet.web + "/dashboard")
            row = page.locator(f'tr[data-terminal="{tid}"]')
            row.locator('input[name="csrf_token"]').evaluate("e => e.remove()")
            row.get_by_role("combobox").select_option("card_only")
            row.get_by_role("button", name="Set").click()
            page.wait_for_load_state()
            assert "security token" in page.content()
            assert fleet.sql("SELECT wanted_mode FROM terminals WHERE id = %s", tid)[0][0] == "normal"
            # with its token the same form works
            page.goto(fleet.web + "/dashboard")
            row = page.locator(f'tr[data-terminal="{tid}"]')
            row.get_by_role("combobox").select_option("card_only")
            row.get_by_role("button", name="Set").click()
            page.wait_for_url("**/dashboard")
            assert fleet.sql("SELECT wanted_mode FROM terminals WHERE id = %s", tid)[0][0] == "card_only"
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    finally:
        evil.shutdown()


# -- what the shopper learns, what staff see --------------------------------------------------------------
def test_optout_status_says_only_in_progress_or_done(fleet):
    tid = "inv-1"
    fleet.provision(tid)  # no agent: its receipt stays pending
    status, body = fleet.http("POST", "/api/optout", {"code": "QQQQ-QQQQ-QQQQ-QQQQ"})
    assert status == 202
    rid = body["revocation_id"]
    status, body = fleet.http("GET", f"/api/revocations/{rid}")
    assert status == 200 and body == {"status": "in progress", "message": "Your request is being carried out."}
    page = raw(fleet, "GET", f"/optout/{rid}")[2]
    assert "being carried out" in page and tid not in page and "pending" not in page
    with chromium() as browser:  # the page follows by itself: its script runs under the CSP (nonce)
        p = browser.new_page()
        errors = []
        p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        p.goto(fleet.web + f"/optout/{rid}")
        assert p.get_by_role("status").inner_text() == "Your request is being carried out."
        fleet.sql("UPDATE revocation_states SET state = 'none-held' WHERE revocation_id = %s RETURNING 1", rid)
        p.get_by_role("status").filter(has_text="Done: your request has been carried out.").wait_for(timeout=10000)
        assert not [e for e in errors if "Content Security Policy" in e], errors
    assert fleet.http("GET", f"/api/revocations/{rid}")[1]["status"] == "done"
    assert fleet.http("GET", "/api/revocations/rev_nosuch")[0] == 404


def test_dashboard_shows_optouts_with_receipts_health_and_no_sales_line(fleet):
    """The dashboard before any sale: "No sales yet"; each opt-out with where it came from and every
    terminal's receipt; reader and camera as the terminal reported them (not "unknown")."""
    tid = "dash-1"
    cfg = fleet.provision(tid)
    r = subprocess.run([sys.executable, "-m", "terminal", "--config", str(cfg), "--data-dir",
                        str(fleet.data_dir(tid)), "doctor", "--demo", "--json",
                        "--skip", "camera", "--skip", "display", "--skip", "leds"],
                       capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert r.returncode in (0, 1), r.stderr  # the reader's check is what counts here
    fleet.start_agent(tid)
    wait_for(lambda: fleet.sql("SELECT reader FROM terminals WHERE id = %s", tid)[0][0], 30, "a heartbeat")
    status, body = fleet.http("POST", "/api/optout", {"code": "DASH-DASH-DASH-DASH"})
    rid = body["revocation_id"]
    wait_for(lambda: fleet.receipts(rid).get(tid) == "none-held", 30, "dash-1's receipt")
    opener, _post = fleet.staff_login()
    html = opener.open(fleet.web + "/dashboard", timeout=10).read().decode()
    assert 'id="no-sales"' in html and "No sales yet." in html
    row = re.search(rf'<tr data-terminal="{tid}">.*?</tr>', html, re.S).group(0)
    reader = re.search(r'class="reader[^"]*">([^<]*)<', row).group(1)
    camera = re.search(r'class="camera[^"]*">([^<]*)<', row).group(1)
    assert reader.startswith("ok: PN532 firmware 1.6") and "facepay doctor" in reader, reader
    assert camera and "unknown" not in camera, camera
    optout = re.search(rf'<tr data-revocation="{rid}">.*?</tr>', html, re.S).group(0)
    assert "opt-out code" in optout and f'data-terminal="{tid}"' in optout and f"{tid}: none-held" in optout


def test_kiosk_heartbeat_carries_the_live_reader_and_camera_health(fleet, tmp_path):
    """The kiosk's agent reports what its running hardware knows: the PN532 simulator's firmware while it
    answers, the reason when it is gone, a camera failure the kiosk met."""
    from terminal.config import load_config
    from terminal.fleet_agent import AgentThread
    from terminal.hardware import build_hardware, demo_config

    tid = "kiosk-hb"
    cfg = demo_config(load_config(fleet.provision(tid)))  # heartbeats every second
    data = fleet.data_dir(tid)
    data.mkdir(mode=0o700)
    hw = build_hardware(cfg, data)
    thread = AgentThread(cfg, data, health=hw.health).start()
    try:
        def reported(prefix):
            def seen():
                row = fleet.sql("SELECT reader, camera FROM terminals WHERE id = %s", tid)[0]
                return row if row[0] and row[0].startswith(prefix) else None
            return seen

        reader, camera = wait_for(reported("ok: PN532 firmware 1.6, polling (simulated)"), 30, "the live reader")
        assert camera.startswith("ok so far: not opened since the kiosk started")
        hw.camera_seen("camera: no frame within 2 s")
        wait_for(lambda: fleet.sql("SELECT camera FROM terminals WHERE id = %s", tid)[0][0]
                 == "FAIL: camera: no frame within 2 s", 30, "the camera fault")
        hw.sim.stop()
        hw.sim = None
        reader, _ = wait_for(reported("FAIL: "), 30, "the lost reader")
        assert "unknown" not in reader
    finally:
        thread.stop()
        hw.close()


# -- make fleet-demo's tracebacks -----------------------------------------------------------------------
def test_provisioning_in_parallel_prints_no_traceback(fleet):
    """`provision` sends the NATS server a config reload; a connection cut by a reload (another
    provision's) is retried quietly, not logged as a traceback (`make fleet-demo` printed three)."""
    def provision(tid):
        return subprocess.run([sys.executable, "-m", "backoffice.cli", "--workdir", str(fleet.workdir), "provision",
                               "--terminal-id", tid, "--out", str(fleet.workdir.parent / f"{tid}.toml")],
                              capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)

    with ThreadPoolExecutor(6) as pool:
        runs = list(pool.map(provision, [f"par-{i}" for i in range(6)]))
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert not [r.stderr for r in runs if "Traceback" in r.stderr or "ERROR" in r.stderr]
