"""The ``facepay`` command (also ``python -m terminal``).

Every subcommand prints for people by default and JSON with ``--json``.
Exit status: 0 success, 1 a clean "no" (no match, not found, declined,
ledger broken), 2 bad arguments or unusable input, 3 a payment whose outcome
is not known yet (`sale`, `recover`: do not charge again).  Kivy is imported only by
``facepay run``, so the other commands start fast and need no display.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .errors import FacepayError, InputError, UsageError
from .modes import MODES
from .payments.sandbox import FAULTS

EXIT_OK, EXIT_NO, EXIT_USAGE = 0, 1, 2
EXIT_UNKNOWN = 3  # a charge whose outcome is not known yet: do not charge again, `facepay recover` asks


# --------------------------------------------------------------------------- context
class Context:
    """What every command needs, loaded on first use: config, data directory, the Terminal."""

    def __init__(self, args):
        self.args = args
        self._cfg = None
        self._term = None

    @property
    def cfg(self):
        if self._cfg is None:
            from .config import load_config

            self._cfg = load_config(self.args.config, demo=getattr(self.args, "demo", False))
        return self._cfg

    @property
    def data_dir(self) -> Path:
        from .datadir import resolve_data_dir

        return resolve_data_dir(self.args.data_dir, self.cfg.data_dir)

    def terminal(self):
        if self._term is None:
            from .service import Terminal

            self._term = Terminal(self.cfg, self.data_dir)
        return self._term

    def close(self):
        if self._term is not None:
            self._term.close()


def out(args, data, text: str | None = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=None, ensure_ascii=False, default=str))
    elif text is not None:
        print(text)


def parse_uid_arg(text: str, flag: str = "--card-uid", identity: bool = False) -> bytes:
    """A UID from the command line; ``identity``: it must name one card for good (enrolment, look-ups)."""
    from .crypto import parse_uid

    try:
        uid = parse_uid(text)
    except ValueError as exc:
        raise UsageError(str(exc), flag, "give the UID in hex, e.g. 04A1B2C3") from None
    if identity:
        from firmware_bridge.pn532 import is_random_uid

        from .checkout import RANDOM_UID_SENTENCE

        if is_random_uid(uid):
            raise UsageError(RANDOM_UID_SENTENCE, flag)
    return uid


# --------------------------------------------------------------------------- commands
def cmd_run(ctx: Context) -> int:
    a = ctx.args
    if a.script and not a.demo:
        raise UsageError("--script needs --demo (scenarios drive simulated hardware)", "run")
    if a.screenshots and not a.demo:
        raise UsageError("--screenshots needs --demo: screenshots may show the camera picture, so they are only "
                         "taken of the replay camera's public demo photos", "run")
    size = None
    if a.size:
        try:
            w, h = (int(v) for v in a.size.lower().split("x"))
            if w < 320 or h < 240:
                raise ValueError
            size = (w, h)
        except ValueError:
            raise UsageError(f"--size {a.size!r} is not WIDTHxHEIGHT (e.g. 800x480)", "run") from None
    if a.script and not Path(a.script).is_file():
        raise InputError("scenario file not found", a.script)
    from .config import DEFAULTS_SOURCE

    if not a.demo and ctx.cfg.source == DEFAULTS_SOURCE:
        raise UsageError("no config file: a terminal needs one, naming its terminal_id and [staff] pin_hash", "run",
                         "pass --config /etc/facepay/terminal.toml (or set FACEPAY_CONFIG), or use --demo")
    if not a.demo and not ctx.cfg.staff.pin_hash:
        raise UsageError("no staff PIN is set", f"[staff] pin_hash in {ctx.cfg.source}",
                         "run `facepay staff-pin` and put the line it prints in the config, or use --demo")
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    from .memory import tune_malloc

    tune_malloc()   # before the kiosk's threads start and its models load
    from .ui.app import run_kiosk

    return run_kiosk(ctx, demo=a.demo, size=size, script=a.script, screenshots=a.screenshots,
                     fullscreen=a.fullscreen)


def cmd_enroll(ctx: Context) -> int:
    a = ctx.args
    from . import consent

    if not a.consent:
        raise UsageError("enrolment needs the shopper's consent: they must read the consent text and agree; "
                         "then pass --consent", "enroll")
    uid = parse_uid_arg(a.card_uid, identity=True)
    if a.video and a.images:
        raise UsageError("give photos or --video, not both", "enroll")
    if a.video is None and len(a.images) < 3:
        raise UsageError(f"enrolment needs at least 3 photos, got {len(a.images)}", "enroll")
    text = consent.load(a.lang)
    term = ctx.terminal()
    if not term.cfg.face_pay:
        raise UsageError("face pay is switched off in this terminal's config", "enroll")
    from .sale import face_source, record_liveness_off

    cam = face_source(term, a.images[0] if a.images else None, a.video, a.challenge, "--video")
    record_liveness_off(term, "facepay enroll")   # with liveness off a video is captured without the head turn
    if a.video is not None:
        embeddings = enrol_from_video(term, cam, a.challenge, text, a.name, a.phone_last4)
        if embeddings is None:
            return EXIT_NO
    else:
        embeddings = [term.embed_photo(p) for p in a.images]  # every photo checked before anything is stored
    from .scan import consistent_captures

    bad = consistent_captures(embeddings, term.cfg.match.threshold)
    if bad is not None:
        raise InputError("this photo does not show the same person as the first", a.images[bad],
                         "enrol one person from photos of that person only")
    from .service import AlreadyEnrolled

    try:
        shopper = term.enrol(name=a.name, card_uid=uid, embeddings=embeddings, consent_text=text,
                             phone_last4=a.phone_last4, replace=a.replace)
    except AlreadyEnrolled as exc:  # the 1:N search before storing: one face, one enrolment
        if not a.json:
            raise
        e = exc.shopper
        out(a, {"shopper_id": None, "already_enrolled": {"shopper_id": e.id, "card": e.card_mask,
                                                         "enrolled_at": e.enrolled_at, "same_card": exc.same_card},
                "reason": exc.one_line()})
        return exc.exit_code
    code = term.optout_codes.get(shopper.id)  # only in a fleet: the back office honours it
    replaced = term.replaced.pop(shopper.id, None)
    out(a, {"shopper_id": shopper.id, "name": shopper.name, "optout_code": code,
            "replaced": replaced.as_dict() if replaced else None},
        f"enrolled {shopper.name} as {shopper.id} (card {shopper.card_mask}, consent {text.version})"
        + (f"\nreplaced {replaced.shopper_id}: deletion receipt {replaced.id}" if replaced else "")
        + (f"\nopt-out code (give it to the shopper): {code}" if code else ""))
    return EXIT_OK


def enrol_from_video(term, cam, challenge: str, text, name: str, phone_last4: str | None):
    """The kiosk's own enrolment capture on a video: the checkout machine and the runner open the camera,
    :mod:`terminal.scan` runs the head turn, then keeps captures of the same face from the frames after it.

    None when the challenge was not passed (the machine recorded the failure in the consent ledger, as at
    the kiosk); nothing is stored here: the CLI stores the captures itself (``--replace``, ``--json``).
    """
    from . import checkout as co
    from .runner import Runner

    cfg = term.cfg
    # only the capture runs through the machine (mode and card are the CLI's own checks)
    machine = co.CheckoutMachine(term.policy())
    runner = Runner(term, machine, cam)
    try:
        for ev in (co.StartEnrolment(), co.AgreeConsent(text.version, text.sha256),
                   co.EnrolDetails(name, phone_last4, challenge)):
            runner.dispatch(ev)
        result = runner.scanner.capture_enrolment(runner.dispatch)
    except co.Rejected as exc:
        raise UsageError(str(exc), "enroll") from None
    finally:
        runner.perform(co.CloseCamera())
    if result is not None and not result.live:
        if result.reason == "no_face":
            raise InputError("no single face in the video", str(cam.video), "film one face, facing the camera")
        print(f"facepay enroll: not enrolled: the liveness check failed: {result.words} ({result.reason})",
              file=sys.stderr)
        return None
    embeddings = list(runner.scanner.captures)
    if machine.state != co.State.ENROL_CARD or len(embeddings) < cfg.match.enrol_captures:
        raise InputError(f"after the head turn the video shows {len(embeddings)} usable frame(s) of the same "
                         f"face; {cfg.match.enrol_captures} are needed", str(cam.video),
                         "let the video run on for a second with the face looking at the camera")
    return embeddings


def cmd_identify(ctx: Context) -> int:
    """An operator's 1:N search: refused with face pay off, recorded in the ledger, name only with --show-name."""
    a = ctx.args
    result = {"match": None, "distance": None, "margin": None, "reason": None}
    try:
        from .face.images import load_rgb

        rgb = load_rgb(a.image)
        term = ctx.terminal()
        term.check_identify_allowed()
        analysis = term.pipeline.analyse(rgb)
        if not analysis.gate.ok:
            raise InputError(f"unusable photo: {analysis.gate.reason} ({analysis.gate.guidance})", a.image)
        m, shopper = term.identify(analysis.embedding)
    except FacepayError as exc:
        if a.json:
            result["reason"] = exc.one_line()
            out(a, result)
            return EXIT_USAGE
        raise
    result.update(distance=None if m.distance is None else round(m.distance, 4),
                  margin=None if m.margin is None else round(m.margin, 4), reason=m.reason)
    if shopper:
        result["match"] = {"shopper_id": shopper.id} | ({"name": shopper.name} if a.show_name else {})
    who = f"{shopper.name} ({shopper.id})" if shopper and a.show_name else shopper.id if shopper else ""
    text = f"match: {who}, distance {m.distance:.3f}" if shopper else f"no match: {m.reason}"
    out(a, result, text)
    return EXIT_OK if shopper else EXIT_NO


def cmd_shoppers(ctx: Context) -> int:
    a = ctx.args
    shoppers = [s.public() for s in ctx.terminal().store.all()]
    lines = [f"{s['shopper_id']}  {s['name']:<24} card {s['card']}  enrolled {s['enrolled_at']}"
             f"  last used {s['last_used_at']}" for s in shoppers] or ["no shoppers enrolled"]
    out(a, shoppers, "\n".join(lines))
    return EXIT_OK


def cmd_revoke(ctx: Context) -> int:
    a = ctx.args
    if bool(a.shopper_id) == bool(a.card_uid):
        raise UsageError("give either SHOPPER_ID or --card-uid HEX", "revoke")
    uid = parse_uid_arg(a.card_uid, identity=True) if a.card_uid else None
    term = ctx.terminal()
    shopper = term.resolve_shopper(a.shopper_id, uid)
    receipt = term.revoke(shopper.id)
    out(a, receipt.as_dict(),
        f"deleted {shopper.id}: " + ", ".join(receipt.deleted) + f"\nreceipt {receipt.id} at {receipt.at}")
    return EXIT_OK


def cmd_purge(ctx: Context) -> int:
    a = ctx.args
    receipts = ctx.terminal().purge()
    out(a, [r.as_dict() for r in receipts],
        "\n".join(f"purged {r.shopper_id} (unused for {ctx.cfg.retention.template_days} days): receipt {r.id}"
                  for r in receipts) or "nothing to purge")
    return EXIT_OK


def cmd_audit(ctx: Context) -> int:
    a = ctx.args
    ledger = ctx.terminal().ledger
    if a.audit_cmd == "verify":
        r = ledger.verify()
        out(a, {"ok": r.ok, "entries": r.count, "broken_entry": r.broken_seq, "reason": r.reason},
            f"ledger intact: {r.count} entries" if r.ok else f"ledger BROKEN at entry {r.broken_seq}: {r.reason}")
        return EXIT_OK if r.ok else EXIT_NO
    events = ledger.events(kind=a.kind, subject=a.subject)
    out(a, [e.as_dict() for e in events],
        "\n".join(f"{e.seq:>5}  {e.at}  {e.kind:<18} {e.subject or '-':<16} "
                  f"{json.dumps(e.details, ensure_ascii=False)}" for e in events) or "no events")
    return EXIT_OK


def cmd_sale(ctx: Context) -> int:
    a = ctx.args
    from .sale import run_sale

    result = run_sale(ctx.terminal(), amount=a.amount, card_uid=parse_uid_arg(a.card_uid) if a.card_uid else None,
                      face=a.face, confirm=a.confirm, phone_last4=a.phone_last4, face_video=a.face_video,
                      challenge=a.challenge)
    text = f"{result['status']}: {result['amount']} {result['currency']} by {result['method']}"
    if result.get("reason"):
        text += f" ({result['reason']})"
    out(a, result, text + f"  [{result['sale_id']}]")
    return {"approved": EXIT_OK, "unknown": EXIT_UNKNOWN}.get(result["status"], EXIT_NO)


def cmd_sales(ctx: Context) -> int:
    a = ctx.args
    term = ctx.terminal()
    from .money import format_amount

    if a.sales_cmd == "list":
        sales = [s.as_dict() for s in term.journal.sales()]
        out(a, sales, "\n".join(
            f"{s['id']}  {s['created_at'][:19]}  {format_amount(s['amount_minor'], s['currency']):>12}  "
            f"{s['method']:<5} {s['status']:<9}{' voided' if s['voided'] else ''}"
            f"{' refunded' if s['refunded_minor'] else ''}{' training' if s['training'] else ''}"
            for s in sales) or "no sales")
        return EXIT_OK
    sale_id = a.sale_id
    if sale_id == "last":
        last = term.journal.last_sale()
        if last is None:  # "not found", as for an unknown sale id (exit 1)
            from .errors import NotFoundError

            raise NotFoundError("there are no sales yet", f"sales {a.sales_cmd}")
        sale_id = last.id
    result = term.reverse(a.sales_cmd, sale_id)
    out(a, result, f"{a.sales_cmd} of {sale_id}: {result['status']}"
        + (f" ({result['reason']})" if result["reason"] else "") + (" (already done)" if result["repeated"] else ""))
    return EXIT_OK if result["status"] == "approved" else EXIT_NO


def cmd_report(ctx: Context) -> int:
    a = ctx.args
    from datetime import date

    from .service import report_lines

    try:
        day = date.fromisoformat(a.date) if a.date else None
    except ValueError:
        raise UsageError(f"--date {a.date!r} is not YYYY-MM-DD", "report day") from None
    r = ctx.terminal().report_day(day)
    out(a, r, "\n".join(report_lines(r)))
    return EXIT_OK


def cmd_processor(ctx: Context) -> int:
    a = ctx.args
    proc = ctx.terminal().processor
    if a.proc_cmd == "charges":
        rows = proc.charges()
        out(a, rows, "\n".join(f"{r['key']:<40} {r['kind']:<7} {r['amount_minor']:>9} {r['currency']} "
                               f"{r['status']:<9} {r['reason']}" for r in rows) or "no requests")
    elif a.proc_cmd == "fault":
        proc.set_fault(a.mode)
        out(a, {"fault": a.mode}, f"sandbox processor fault: {a.mode}")
    elif a.proc_cmd == "block":
        term = ctx.terminal()
        token = term.card(parse_uid_arg(a.card_uid))[2]
        proc.block(token)
        out(a, {"blocked": token}, f"card token {token} is now reported stolen")
    return EXIT_OK


def cmd_recover(ctx: Context) -> int:
    a = ctx.args
    done = ctx.terminal().recover()
    out(a, done, "\n".join(f"{d.get('sale_id') or d.get('operation')}: {d['action']} -> {d.get('status', '')}"
                           for d in done) or "nothing to recover")
    return EXIT_OK if all(d["action"] != "still pending" for d in done) else EXIT_UNKNOWN


def cmd_failpoints(ctx: Context) -> int:
    from .failpoints import NAMES

    out(ctx.args, NAMES, "\n".join(f"{k:<28} {v}" for k, v in NAMES.items()))
    return EXIT_OK


def cmd_mode(ctx: Context) -> int:
    a = ctx.args
    term = ctx.terminal()
    if a.mode:
        term.set_mode(a.mode, by="cli")
    mode = term.mode()
    face = term.cfg.face_pay and mode not in ("card_only", "out_of_service")
    out(a, {"mode": mode, "face_pay": face}, f"mode {mode}; face pay {'ON' if face else 'OFF'}")
    return EXIT_OK


def cmd_staff_pin(ctx: Context) -> int:
    import getpass

    from .staff import hash_pin

    pin = ctx.args.pin or getpass.getpass("new staff PIN (4-8 digits): ")
    try:
        h = hash_pin(pin)
    except ValueError as exc:
        raise UsageError(str(exc), "staff-pin") from None
    from .config import StaffConfig, to_toml

    out(ctx.args, {"pin_hash": h}, "[staff]\n" + to_toml(StaffConfig(pin_hash=h)).rstrip("\n"))
    return EXIT_OK


def cmd_liveness(ctx: Context) -> int:
    a = ctx.args
    from .camera.replay import open_clip
    from .scan import run_challenge

    if bool(a.video) == bool(a.frames):
        raise UsageError("give either --video FILE or --frames DIR", "liveness")
    if a.frames and (a.start_frame or a.end_frame is not None):
        raise UsageError("--start-frame and --end-frame go with --video", "liveness")
    cfg = ctx.cfg
    cam = open_clip(a.video, a.frames, a.fps, a.start_frame or 0, a.end_frame)
    try:
        from .face.pipeline import FacePipeline

        result, _ = run_challenge(FacePipeline(cfg.detector), cam, a.challenge, cfg.liveness, cfg.match.threshold)
    finally:
        cam.close()
    data = result.as_dict()
    text = (f"{'LIVE' if result.live else 'NOT LIVE'}: {result.words} (challenge {result.challenge}, "
            f"yaw change {data['yaw_change_deg']} degrees, planarity {data['planarity']}, {result.frames} frames)")
    if result.reason == "no_face":
        if not a.json:
            raise InputError("no single face in any frame", a.video or a.frames, "film one face, facing the camera")
        out(a, data)
        return EXIT_USAGE
    out(a, data, text)
    return EXIT_OK if result.live else EXIT_NO


def cmd_bench(ctx: Context) -> int:
    from .bench import run_bench

    return run_bench(ctx)


def cmd_doctor(ctx: Context) -> int:
    from .doctor import run_doctor

    return run_doctor(ctx)


def cmd_flash(ctx: Context) -> int:
    from .flash import run_flash

    return run_flash(ctx)


def cmd_agent(ctx: Context) -> int:
    from .fleet_agent import run_headless

    return run_headless(ctx.cfg, ctx.data_dir)


def cmd_till(ctx: Context) -> int:
    a = ctx.args
    from .till.headless import run_headless

    if a.listen:
        host, sep, port = a.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise UsageError(f"--listen {a.listen!r} is not HOST:PORT", "till",
                             "e.g. --listen 127.0.0.1:20007 (port 0: any free port, printed at start)")
    uid = parse_uid_arg(a.auto_card, "--auto-card") if a.auto_card else None
    return run_headless(ctx, a.listen, a.serial, a.demo, uid)


def cmd_receipt(ctx: Context) -> int:
    a = ctx.args
    from . import receipts

    term = ctx.terminal()
    sale_id = a.sale_id
    if sale_id == "last":
        last = term.journal.last_sale()
        if last is None:
            raise UsageError("there are no sales yet", "receipt")
        sale_id = last.id
    found = receipts.receipts_of(term, sale_id)
    if a.format == "escpos":
        sys.stdout.buffer.write(b"".join(receipts.escpos_bytes(r, term.cfg) for r in found))
        sys.stdout.buffer.flush()
        return EXIT_OK
    out(a, [r.__dict__ | {"receipt": r.receipt, "at": r.at.isoformat(), "text": r.text(term.cfg)} for r in found],
        "\n".join(r.text(term.cfg) for r in found).rstrip("\n"))
    return EXIT_OK


def cmd_config(ctx: Context) -> int:
    from .config import to_dict, to_toml

    cfg = ctx.cfg
    if ctx.args.json:
        print(json.dumps(to_dict(cfg), ensure_ascii=False))
    else:
        print(to_toml(cfg), end="")
    return EXIT_OK


# --------------------------------------------------------------------------- parser
class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for machines")

    p = Parser(prog="facepay", description="Face-payment point-of-sale terminal: opt-in only, off means deleted. "
               "Shoppers use the kiosk (`facepay run`); the other commands are operator tools for tests and "
               "support, and what they record in the consent ledger is marked channel \"cli\".")
    p.add_argument("--data-dir", help="data folder (else $FACEPAY_DATA_DIR, else the config's data_dir, "
                                      "else ~/.local/share/facepay)")
    p.add_argument("--config", help="terminal.toml (else $FACEPAY_CONFIG, else the built-in defaults: the real "
                                    "hardware)")
    p.add_argument("--version", action="version", version=f"facepay {__version__}",
                   help="print the installed version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def add(name, func, help_, **kw):
        sp = sub.add_parser(name, help=help_, description=help_, parents=[common], **kw)
        sp.set_defaults(func=func)
        return sp

    sp = add("run", cmd_run, "run the kiosk")
    sp.add_argument("--demo", action="store_true", help="simulated hardware: replay camera, PN532 simulator, "
                                                        "mock LEDs, sandbox processor; staff PIN 2580 if none is set")
    sp.add_argument("--size", help="window size WIDTHxHEIGHT (default 800x480)")
    sp.add_argument("--fullscreen", action="store_true", help="full screen (the Pi)")
    sp.add_argument("--script", help="play a scenario file through the real widgets, then exit")
    sp.add_argument("--screenshots", help="save a PNG of every screen passed through into this folder")

    sp = add("enroll", cmd_enroll, "enrol a shopper from a video of the head-turn challenge (photos only with "
                                   "[liveness] required = false); they must have agreed to the consent text; a "
                                   "face already enrolled is refused (exit 1) unless --replace names its enrolment")
    sp.add_argument("--name", required=True)
    sp.add_argument("--card-uid", required=True, help="the card to link, in hex")
    sp.add_argument("--consent", action="store_true", help="the shopper read the consent text and agreed "
                                                           "(the operator's statement: recorded as channel cli)")
    sp.add_argument("--phone-last4", help="last 4 phone digits for the step-up check")
    sp.add_argument("--lang", default="en", choices=["en", "zh"], help="language of the consent text shown")
    sp.add_argument("--video", metavar="FILE", help="a video of the shopper doing the head-turn challenge, then "
                                                    "looking at the camera (needed while [liveness] required = true)")
    sp.add_argument("--challenge", choices=["left", "right"], help="with --video: the side the shopper was asked "
                                                                   "to turn to")
    sp.add_argument("--replace", metavar="SHOPPER_ID", help="this face is enrolled as SHOPPER_ID: delete that "
                                                            "enrolment (deletion receipt) and enrol the face with "
                                                            "the new card (the operator's statement that it is the "
                                                            "shopper's own)")
    sp.add_argument("images", nargs="*", metavar="IMAGE", help="3 or more photos of the shopper "
                                                               "(only with [liveness] required = false)")

    sp = add("identify", cmd_identify, "operator tool: which enrolled shopper is in this photo? Recorded in the "
                                       "consent ledger; refused with face pay off (exit 0 match, 1 no match, "
                                       "2 unusable or refused)")
    sp.add_argument("image", metavar="IMAGE")
    sp.add_argument("--show-name", action="store_true", help="print the shopper's name (default: only their id)")

    sp = add("shoppers", cmd_shoppers, "list enrolled shoppers (no biometric data)")
    sp.add_argument("shoppers_cmd", choices=["list"], nargs="?", default="list")

    sp = add("revoke", cmd_revoke, "opt a shopper out: destroy their face data and print the deletion receipt")
    sp.add_argument("shopper_id", nargs="?")
    sp.add_argument("--card-uid", help="find the shopper by their card")

    add("purge", cmd_purge, "delete templates unused for longer than [retention] template_days")

    sp = add("audit", cmd_audit, "the consent ledger")
    sp.add_argument("audit_cmd", choices=["verify", "show"])
    sp.add_argument("--kind", help="show only this event kind")
    sp.add_argument("--subject", help="show only events about this shopper id")

    sp = add("sale", cmd_sale, "run one sale headlessly through the state machine and the processor")
    sp.add_argument("--amount", required=True, help="e.g. 12.50")
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("--card-uid", help="pay by this card (hex UID)")
    g.add_argument("--face", metavar="IMAGE", help="pay by face: the photo stands in for the camera "
                                                   "(only with [liveness] required = false)")
    g.add_argument("--face-video", metavar="FILE", help="pay by face: a video of the shopper doing the head-turn "
                                                        "challenge stands in for the camera")
    sp.add_argument("--challenge", choices=["left", "right"], help="with --face-video: the side the shopper was "
                                                                   "asked to turn to")
    sp.add_argument("--confirm", action="store_true", help="the shopper agreed to the amount (the operator's "
                                                           "statement: recorded as channel cli, not a kiosk press)")
    sp.add_argument("--phone-last4", help="digits typed at the phone step-up")

    sp = add("sales", cmd_sales, "the sales journal: list, void, refund")
    sp.add_argument("sales_cmd", choices=["list", "void", "refund"])
    sp.add_argument("sale_id", nargs="?", default="last", help="sale id, or 'last'")

    sp = add("report", cmd_report, "end-of-day totals")
    sp.add_argument("report_cmd", choices=["day"])
    sp.add_argument("--date", help="YYYY-MM-DD in [terminal] timezone (default today there)")

    sp = add("processor", cmd_processor, "the sandbox processor's own ledger and test switches")
    sp.add_argument("proc_cmd", choices=["charges", "fault", "block"])
    sp.add_argument("mode", nargs="?", choices=list(FAULTS), help="with 'fault'")
    sp.add_argument("--card-uid", help="with 'block': report this card stolen")

    add("recover", cmd_recover, "settle sales a crash left in flight (also run at kiosk start-up)")
    add("failpoints", cmd_failpoints, "list the crash points FACEPAY_FAILPOINT accepts")

    sp = add("mode", cmd_mode, "show or set the terminal mode")
    sp.add_argument("mode", nargs="?", choices=MODES)

    add("agent", cmd_agent, "sync with the fleet's back office (needs [fleet] in the config): outbox, "
                            "revocations, mode, heartbeats; runs until stopped")

    sp = add("staff-pin", cmd_staff_pin, "hash a new staff PIN for [staff] pin_hash")
    sp.add_argument("--pin", help="the PIN (prompted for if left out)")

    sp = add("liveness", cmd_liveness, "the kiosk's head-turn liveness check on a video or a folder of frames "
                                       "(exit 0 live, 1 not live, 2 unusable input)")
    sp.add_argument("--video", metavar="FILE", help="a video file OpenCV reads (.mp4, .avi, ...)")
    sp.add_argument("--start-frame", type=int, default=0, metavar="N", help="first frame of the video to use (0-based)")
    sp.add_argument("--end-frame", type=int, metavar="M", help="last frame of the video to use")
    sp.add_argument("--frames", metavar="DIR", help="a folder of frames, read in name order")
    sp.add_argument("--fps", type=float, help="frame rate (default: the video's own; 30 for a folder)")
    sp.add_argument("--challenge", required=True, choices=["left", "right"],
                    help="the side the shopper was asked to turn to (their own left or right)")

    sp = add("bench", cmd_bench, "time the face pipeline and 1:N matching")
    sp.add_argument("--frames", required=True, help="folder of images")
    sp.add_argument("--sizes", default="1000,10000,100000", help="gallery sizes for the match timing")
    sp.add_argument("--repeat", type=int, default=3, help="passes over the frames")

    sp = add("doctor", cmd_doctor, "check this terminal's parts; exit 0 when all pass")
    sp.add_argument("--blink", action="store_true", help="light each LED once")
    sp.add_argument("--skip", action="append", default=[], help="skip a check by name")
    sp.add_argument("--demo", action="store_true", help="check the simulated parts `run --demo` uses; without it "
                                                        "every simulated part is reported as a warning")

    sp = add("flash", cmd_flash, "write a Raspberry Pi OS image to an SD card with this terminal's config")
    sp.add_argument("image", metavar="IMAGE", help=".img or .img.xz")
    sp.add_argument("target", metavar="TARGET", help="the SD card's block device (or an image file)")
    sp.add_argument("--config", dest="flash_config", required=True, help="terminal.toml to install")
    sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sp.add_argument("--release", default="dist/release",
                    help="the release folder to install on first boot: the wheel, requirements.lock, deploy/, "
                         "systemd/ (`make release` makes dist/release, the default)")

    add("config", cmd_config, "print the effective configuration as TOML (JSON with --json)")

    sp = add("till", cmd_till, "serve the shop's till over ZVT without a screen (card sales; the kiosk runs the same "
                               "link when [till] is set)")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--listen", metavar="HOST:PORT", help="ZVT over TCP on this address (default: [till] listen)")
    g.add_argument("--serial", metavar="DEVICE", help="ZVT over this serial device (default: [till] device)")
    sp.add_argument("--demo", action="store_true", help="simulated reader, camera and LEDs, sandbox processor")
    sp.add_argument("--auto-card", metavar="UID", help="with --demo: the simulated reader presents this card one "
                                                      "second after each amount is due")

    sp = add("receipt", cmd_receipt, "print a sale's receipts (customer and merchant; its void and refund too)")
    sp.add_argument("sale_id", metavar="SALE_ID", help="sale id, or 'last'")
    sp.add_argument("--format", choices=["text", "escpos"], default="text",
                    help="text (default) or the ESC/POS bytes a receipt printer takes, on stdout")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "processor" and args.proc_cmd == "fault" and not args.mode:
        parser.exit(EXIT_USAGE, f"facepay processor: error: 'fault' needs a mode: {', '.join(FAULTS)}\n")
    if args.command == "processor" and args.proc_cmd == "block" and not args.card_uid:
        parser.exit(EXIT_USAGE, "facepay processor: error: 'block' needs --card-uid\n")
    if args.command in ("run", "agent", "till"):
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = Context(args)
    try:
        return args.func(ctx)
    except FacepayError as exc:
        # one prefix: an error about the command itself (where = "enroll", "sales refund") is said once
        own = exc.where is not None and (exc.where == args.command or exc.where.startswith(args.command + " "))
        print(f"facepay {exc.where if own else args.command}: error: {exc.one_line(where=not own)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        ctx.close()
