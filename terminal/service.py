"""The terminal's operations, shared by the CLI and the kiosk UI.

:class:`Terminal` owns the data directory's stores (shoppers, consent ledger,
sales journal, processor) and the face pipeline.  It never touches Kivy; the
state machine decides *what* happens, this module does it.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from firmware_bridge.pn532 import is_random_uid

from . import consent, crypto, failpoints
from .checkout import RANDOM_UID_SENTENCE, CardTapped, ShopperView
from .config import Config
from .datadir import ensure_data_dir, load_or_create_master_key
from .errors import FacepayError, InputError, NotFoundError
from .face.images import load_rgb
from .face.matcher import Gallery, MatchResult
from .ledger import ConsentLedger, write_genesis
from .payments.journal import Journal, SaleRecord
from .payments.processor import IdempotencyKeyReused, Outcome, Processor, ProcessorError
from .payments.sandbox import SandboxProcessor
from .shoppers import DeletionReceipt, Shopper, ShopperStore, scrub_wal_database

_log = logging.getLogger(__name__)

CHARGE_RETRIES = 2
PHONE_FAILURE_LIMIT = 5                  # wrong phone digits per shopper ...
PHONE_FAILURE_WINDOW = timedelta(hours=24)  # ... within this long suspend their face pay
CHANNELS = ("kiosk", "cli", "demo")      # where a consent or confirmation came from (recorded with it)


class AlreadyEnrolled(FacepayError, LookupError):
    """The 1:N search before storing found the face being enrolled: one face, one enrolment; nothing stored."""

    exit_code = 1

    def __init__(self, shopper: Shopper, same_card: bool):
        self.shopper, self.same_card = shopper, same_card
        since = shopper.enrolled_at[:10]
        if same_card:
            super().__init__(f"this face is already enrolled with this card, as {shopper.id} (since {since}); "
                             "nothing was stored", None, "the shopper can pay by face with this card as it is")
        else:
            super().__init__(f"this face is already enrolled as {shopper.id} with card {shopper.card_mask} (since "
                             f"{since}); nothing was stored", None,
                             f"keep that enrolment, or pass --replace {shopper.id} to delete it (deletion receipt) "
                             "and enrol this face with the new card")


class CardAlreadyLinked(InputError):
    """The card tapped for an enrolment already belongs to another shopper's enrolment."""

    def __init__(self):
        super().__init__("this card is already linked to an enrolled shopper", "--card-uid",
                         "revoke that enrolment first, or use another card")


@dataclass(frozen=True)
class ChargeReport:
    sale_id: str
    status: str          # approved, declined, unknown (pending in the journal until looked up), cancelled
    reason: str
    reference: str


class Terminal:
    def __init__(self, cfg: Config, data_dir: Path, channel: str = "cli"):
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        self.cfg = cfg
        self.data_dir = ensure_data_dir(data_dir)
        self.master_key = load_or_create_master_key(self.data_dir)
        self.store = ShopperStore(self.data_dir, self.master_key, on_create=lambda conn: write_genesis(
            conn, self.master_key, cfg.terminal_id, channel))
        self.ledger = ConsentLedger(self.store.db, self.master_key, anchor=self.store.keys, channel=channel)
        if self.store.migration.found == 0 and not self.store.migration.created:
            self.ledger.adopt(cfg.terminal_id)  # a data folder from before genesis entries
        keys = self.store.keys_migration
        self.ledger.settle_anchor(may_start=(keys.created and self.store.migration.created)
                                  or (keys.found == 0 and not keys.created))
        self.journal = Journal(self.data_dir / "journal.db")
        self.complete_deletions()
        self.processor: Processor = SandboxProcessor(self.data_dir / "sandbox-processor.db",
                                                     crypto.derive(self.master_key, "sandbox-token"))
        self._pipeline = None
        self._gallery: Gallery | None = None
        self._gallery_version = -1
        # fleet hook (terminal/fleet/): None when the config has no [fleet] section
        self.fleet = None
        self.optout_codes: dict[str, str] = {}  # shopper id -> opt-out code, shown once after enrolment
        self.replaced: dict[str, DeletionReceipt] = {}  # new shopper id -> receipt of the enrolment it replaced
        if cfg.fleet.enabled:
            from .fleet.link import FleetLink

            self.fleet = FleetLink(self)

    @property
    def channel(self) -> str:
        """Where this process's consents and confirmations come from: ``kiosk`` or ``cli``."""
        return self.ledger.channel

    @channel.setter
    def channel(self, value: str) -> None:
        if value not in CHANNELS:
            raise ValueError(f"unknown channel {value!r}")
        self.ledger.channel = value

    def close(self) -> None:
        if getattr(self, "_receipt_book", None) is not None:
            self._receipt_book.close()
        self.drop_gallery()
        self.store.close()
        self.journal.close()
        self.processor.close()

    # -- face pipeline -----------------------------------------------------------
    @property
    def pipeline(self):
        if self._pipeline is None:
            from .face.pipeline import FacePipeline

            self._pipeline = FacePipeline(self.cfg.detector)
        return self._pipeline

    def gallery(self) -> Gallery:
        """The opted-in templates, decrypted into memory while face pay is on.

        Reloaded whenever another process changed the shopper database (``facepay revoke`` or the
        purge timer while the kiosk runs): SQLite's ``data_version`` tells, so a revocation made
        anywhere takes effect at the next match, not at the next restart.
        """
        version = self.store.data_version()
        if self.fleet_paused():  # fail closed: no template in memory while out of touch with the fleet
            self.drop_gallery()
            return Gallery([], np.zeros((0, 128), np.float32))
        if self._gallery is not None and version != self._gallery_version:
            self.drop_gallery()
        if self._gallery is None:
            self._gallery = self.store.gallery(exclude=self._revoked_ids())
            self._gallery_version = version
        return self._gallery

    def drop_gallery(self) -> None:
        if self._gallery is not None:
            self._gallery.matrix[:] = 0  # overwrite the decrypted templates before letting go
        self._gallery = None

    # -- terminal mode (persisted in facepay.db so a restart keeps what staff chose) --
    def mode(self) -> str:
        return self.store.settings().get("mode", self.cfg.mode)

    def set_mode(self, mode: str, by: str = "staff", record: bool = True) -> None:
        old = self.mode()
        if mode != old:
            self.store.set_setting("mode", mode)
            if record:
                self.ledger.append("mode_changed", "", **{"from": old, "to": mode, "by": by,
                                                           "terminal_id": self.cfg.terminal_id})
        if mode in ("card_only", "out_of_service"):
            self.drop_gallery()

    def face_pay_on(self) -> bool:
        return self.cfg.face_pay and self.mode() not in ("card_only", "out_of_service") and not self.fleet_paused()

    def fleet_paused(self) -> bool:
        """In a fleet and not caught up with its revocations within [fleet] max_staleness_s: card only."""
        return self.fleet is not None and self.fleet.paused()

    def policy(self):
        from .checkout import Policy

        return Policy.from_config(self.cfg)

    def match(self, embedding: np.ndarray) -> MatchResult:
        m = self.cfg.match
        return self.gallery().match(embedding, m.threshold, m.margin)

    def embed_photo(self, path: str | Path) -> np.ndarray:
        """One photo to one descriptor; a photo that fails a gate is an InputError naming it."""
        rgb = load_rgb(path)
        analysis = self.pipeline.analyse(rgb)
        if not analysis.gate.ok:
            raise InputError(f"unusable photo: {analysis.gate.reason} ({analysis.gate.guidance})", str(path))
        return analysis.embedding

    # -- shoppers ------------------------------------------------------------------
    def view(self, shopper: Shopper) -> ShopperView:
        return ShopperView(shopper.id, shopper.masked_name, shopper.card_mask, shopper.token,
                           shopper.phone_hash is not None, shopper.enrolled_at,
                           suspended=self.face_pay_suspended(shopper.id))

    # -- the phone-digits guessing limit -------------------------------------------------
    def face_pay_suspended(self, shopper_id: str) -> bool:
        """Suspended after too many wrong phone digits, and not unlocked at "my data" since."""
        last = self.ledger.events(subject=shopper_id, kinds=("face_pay_suspended", "face_pay_unlocked"))
        return bool(last) and last[-1].kind == "face_pay_suspended"

    def _recent_phone_failures(self, shopper_id: str, now: datetime) -> int:
        cutoff = (now - PHONE_FAILURE_WINDOW).isoformat(timespec="microseconds")
        events = self.ledger.events(subject=shopper_id, kinds=("phone_check_failed", "face_pay_unlocked"))
        count = 0
        for e in reversed(events):
            if e.kind == "face_pay_unlocked" or e.at < cutoff:
                break
            count += 1
        return count

    def check_phone(self, shopper_id: str, digits: str, sale_id: str | None = None) -> tuple[bool, bool]:
        """The phone step-up: (digits right, face pay now suspended; never after right digits).
        A wrong entry goes into the ledger; the ``PHONE_FAILURE_LIMIT``-th within ``PHONE_FAILURE_WINDOW``
        (across sales) suspends face pay."""
        shopper = self.store.get(shopper_id)
        if shopper is None:
            return False, False
        if self.store.check_phone(shopper, digits):
            return True, False  # right digits: the machine goes on, whatever the suspension says
        details = {"sale_id": sale_id} if sale_id else {}
        self.ledger.append("phone_check_failed", shopper_id, terminal_id=self.cfg.terminal_id, **details)
        if self.face_pay_suspended(shopper_id):
            return False, True
        failures = self._recent_phone_failures(shopper_id, datetime.now(timezone.utc))
        if failures >= PHONE_FAILURE_LIMIT:
            self.ledger.append("face_pay_suspended", shopper_id, failures=failures,
                               window_hours=int(PHONE_FAILURE_WINDOW.total_seconds() // 3600),
                               terminal_id=self.cfg.terminal_id)
            self.drop_gallery()
            return False, True
        return False, False

    def unlock_face_pay(self, shopper_id: str, digits: str) -> bool:
        """At "my data", after the shopper tapped their enrolled card: the right digits switch face pay back on."""
        shopper = self.store.get(shopper_id)
        if shopper is None or not self.face_pay_suspended(shopper_id):
            return False
        if not self.store.check_phone(shopper, digits):
            self.ledger.append("phone_check_failed", shopper_id, where="my data", terminal_id=self.cfg.terminal_id)
            return False
        self.ledger.append("face_pay_unlocked", shopper_id, terminal_id=self.cfg.terminal_id)
        return True

    # -- identification outside a payment ------------------------------------------------
    def check_identify_allowed(self) -> None:
        """Identification outside a payment is refused out of service and with face pay off."""
        from .errors import UsageError

        if not self.face_pay_on():
            why = ("the terminal is out of service" if self.mode() == "out_of_service"
                   else "face pay is off at this terminal")
            raise UsageError(f"identification refused: {why}", "identify")

    def identify(self, embedding: np.ndarray) -> tuple[MatchResult, Shopper | None]:
        """A 1:N search for `facepay identify`; every search is recorded (when, channel, matched or not; no name)."""
        self.check_identify_allowed()
        m = self.match(embedding)
        shopper = self.store.get(m.shopper_id) if m.matched else None
        self.ledger.append("identification", shopper.id if shopper else "", matched=shopper is not None,
                           reason=m.reason, terminal_id=self.cfg.terminal_id)
        return m, shopper

    def card(self, uid: bytes) -> tuple[str, str, str]:
        """A tapped card as the terminal may keep it: (keyed hash, masked form, processor token)."""
        h = crypto.card_hash(self.master_key, uid)
        if self.fleet is not None:
            self.fleet.card_seen(uid, h)
        return h, crypto.mask_uid(uid), self.processor.tokenize(h)

    def tap(self, uid: bytes) -> CardTapped:
        """A card tapped at the reader, as the state machine takes it: a random UID is flagged."""
        return CardTapped(*self.card(uid), random_uid=is_random_uid(uid))

    def enrol(self, *, name: str, card_uid: bytes, embeddings: list[np.ndarray], consent_text: consent.ConsentText,
              phone_last4: str | None = None, replace: str | None = None) -> Shopper:
        if is_random_uid(card_uid):
            raise InputError(RANDOM_UID_SENTENCE, "--card-uid")
        h, mask, token = self.card(card_uid)
        return self.enrol_hashed(name=name, card_hash=h, masked_card=mask, token=token, embeddings=embeddings,
                                 consent_text=consent_text, phone_last4=phone_last4, replace=replace)

    def find_enrolled(self, template: np.ndarray) -> Shopper | None:
        """The 1:N search before storing: the enrolled shopper whose template is under the match threshold."""
        paused = self.fleet_paused()  # the cached gallery is empty then; search a copy, wiped after use
        gallery = self.store.gallery(exclude=self._revoked_ids()) if paused else self.gallery()
        try:
            near = gallery.nearest(template)
        finally:
            if paused:
                gallery.matrix[:] = 0
        if near is None or near[1] >= self.cfg.match.threshold:
            return None
        return self.store.get(near[0])

    def enrol_hashed(self, *, name: str, card_hash: str, masked_card: str, token: str, embeddings: list[np.ndarray],
                     consent_text: consent.ConsentText, phone_last4: str | None = None,
                     replace: str | None = None) -> Shopper:
        """Store a shopper who has read ``consent_text`` and agreed; records the grant in the ledger.

        One face, one enrolment: a face already enrolled raises :class:`AlreadyEnrolled` (recorded as
        ``enrolment_duplicate``, nothing stored) unless ``replace`` names that enrolment, which is then
        deleted first, with its receipt (``self.replaced``), as an opt-out would."""
        if len(embeddings) < self.cfg.match.enrol_captures:
            raise InputError(f"enrolment needs at least {self.cfg.match.enrol_captures} good captures, got {len(embeddings)}")
        if not name.strip():
            raise InputError("a name is required for enrolment")
        if phone_last4 is not None and not (len(phone_last4) == 4 and phone_last4.isdigit()):
            raise InputError("the phone digits must be exactly four digits", "--phone-last4")
        if phone_last4 is None and self.policy().phone_required:
            raise InputError(
                "the last 4 digits of the shopper's phone are needed: with this terminal's step-up policy every "
                "face payment asks for them (docs/privacy.md)", "--phone-last4",
                "ask the shopper for them, or raise [match] stepup_false_match_bound")
        template = np.mean(np.vstack(embeddings), axis=0).astype(np.float32)
        earlier = self.find_enrolled(template)
        if earlier is not None and earlier.id != replace:
            same_card = earlier.card_hash == card_hash
            self.ledger.append("enrolment_duplicate", earlier.id, same_card=same_card, terminal_id=self.cfg.terminal_id)
            raise AlreadyEnrolled(earlier, same_card)
        if replace is not None and earlier is None:
            raise InputError(f"this face is not the one enrolled as {replace}: nothing was replaced", "--replace",
                             "`facepay identify` shows whose face a photo is")
        holder = self.store.by_card_hash(card_hash)
        if holder is not None and holder.id != replace:
            raise CardAlreadyLinked()
        receipt = self.revoke(replace, cause="replaced") if replace is not None else None
        # The grant is recorded before anything is stored: no template ever exists without its consent record.
        sid = self.store.new_id()
        self.ledger.append("consent_granted", sid, consent_version=consent_text.version,
                           consent_sha256=consent_text.sha256, lang=consent_text.lang,
                           captures=len(embeddings), terminal_id=self.cfg.terminal_id)
        failpoints.hit("after_consent_ledger_write")
        shopper = self.store.add(sid=sid, name=name.strip(), card_hash=card_hash, card_mask=masked_card, token=token,
                                 template=template, captures=len(embeddings), consent_version=consent_text.version,
                                 consent_hash=consent_text.sha256, phone_last4=phone_last4)
        self._gallery = None
        if receipt is not None:
            self.replaced[shopper.id] = receipt
        if self.fleet is not None and (code := self.fleet.enrolled(shopper)):
            self.optout_codes[shopper.id] = code
        return shopper

    def resolve_shopper(self, shopper_id: str | None = None, card_uid: bytes | None = None) -> Shopper:
        shopper = self.store.get(shopper_id) if shopper_id else self.store.by_card(card_uid)
        if shopper is None:
            what = f"no enrolled shopper {shopper_id}" if shopper_id else "no face is enrolled for this card"
            raise NotFoundError(what, hint="`facepay shoppers list` shows who is enrolled")
        return shopper

    def revoke(self, shopper_id: str, cause: str = "opt-out", scrub: bool = True) -> DeletionReceipt:
        """Opt a shopper out: record it, drop them from memory, crypto-shred their data, return the receipt.

        The ledger entry comes first, so a power cut at any later point leaves a record that
        :meth:`complete_deletions` (run by every process at start) finishes with the same receipt id.
        """
        shopper = self.store.get(shopper_id)
        if shopper is None:
            raise KeyError(shopper_id)
        receipt_id = self.store.new_receipt_id()
        kind = "template_purged" if cause == "retention" else "consent_revoked"
        if self.fleet is not None and cause == "opt-out":  # the fleet follows an opt-out made here
            self.fleet.optout_requested(shopper_id, receipt_id)
        self.ledger.append(kind, shopper_id, receipt_id=receipt_id, cause=cause,
                           deleted=self.store.deletion_list(shopper))
        if self._gallery is not None:
            self._gallery = self._gallery.without(shopper_id)
        failpoints.hit("after_revoke_ledger_write")
        receipt = self._delete(shopper, cause, receipt_id)
        if self.fleet is not None and cause != "fleet opt-out":
            self.fleet.forget(shopper_id)  # before the scrub: the fleet's link row holds the card hash
        if scrub:
            self.scrub()
        return receipt

    def _delete(self, shopper: Shopper, cause: str, receipt_id: str) -> DeletionReceipt:
        """Sales keep a tombstone instead of the shopper and their card token; then crypto-shred.

        The caller scrubs (:meth:`scrub`), once for a batch of deletions.
        """
        sale_ids = self.journal.sales_of(shopper.id, shopper.token)
        self.journal.tombstone(shopper.id, shopper.token, "deleted:" + receipt_id)
        self._receipts().forget_cards(sale_ids)   # the receipts the terminal keeps lose the masked card
        return self.store.delete(shopper.id, cause, receipt_id)

    def _receipts(self):
        """The receipt book (receipts.db), opened on first use; receipts.py builds on this module, hence here."""
        from .receipts import receipt_book
        return receipt_book(self)

    def _scrub_journal(self) -> None:
        if not scrub_wal_database(self.journal.db, vacuum=False):
            _log.warning("journal.db is busy: its write-ahead log is emptied at the next opt-out or start")

    def scrub(self) -> None:
        """After a batch of deletions: scrub both databases and the journal once."""
        self.store.scrub()
        self._scrub_journal()
        if not scrub_wal_database(self._receipts().db, vacuum=False):
            _log.warning("receipts.db is busy: its write-ahead log is emptied at the next opt-out or start")

    def _deletion_events(self) -> dict:
        """shopper id -> the ledger's opt-out or purge event for them."""
        return {e.subject: e for kind in ("consent_revoked", "template_purged") for e in self.ledger.events(kind=kind)}

    def _revoked_ids(self) -> set[str]:
        """Everyone the ledger says was opted out or purged: never matched, even mid-deletion."""
        return set(self._deletion_events())

    def complete_deletions(self) -> list[DeletionReceipt]:
        """Finish opt-outs and purges a crash interrupted (the ledger has them, or the key is gone)."""
        recorded = self._deletion_events()
        done = []
        for shopper in self.store.all():
            event = recorded.get(shopper.id)
            if event is None and self.store.has_key(shopper.id):
                continue
            if event is None:  # the key is gone but nothing was recorded: record it now
                receipt_id = self.store.new_receipt_id()
                self.ledger.append("consent_revoked", shopper.id, receipt_id=receipt_id, cause="interrupted deletion",
                                   deleted=self.store.deletion_list(shopper))
                cause = "interrupted deletion"
            else:
                receipt_id, cause = event.details["receipt_id"], event.details.get("cause", "opt-out")
            done.append(self._delete(shopper, cause, receipt_id))
            _log.warning("finished an interrupted deletion of %s (receipt %s)", shopper.id, receipt_id)
        if self.store.drop_orphan_keys() or done:
            self.scrub()
        return done

    def purge(self, now: datetime | None = None) -> list[DeletionReceipt]:
        receipts = [self.revoke(s.id, cause="retention", scrub=False)
                    for s in self.store.unused_since(self.cfg.retention.template_days, now)]
        if receipts:
            self.scrub()  # one checkpoint and VACUUM for the whole batch
        return receipts

    # -- payments --------------------------------------------------------------------
    def idempotency_key(self, sale_id: str) -> str:
        """Terminal id + sale id: unique across every terminal that talks to one processor."""
        return f"{self.cfg.terminal_id}:{sale_id}"

    def charge(self, sale_id: str, amount_minor: int, currency: str, method: str, token: str,
               shopper_id: str | None, training: bool = False, masked_card: str = "") -> ChargeReport:
        """Journal first, then the processor, then the journal again; crash-safe at every step.

        Returns approved, declined (the processor said no) or unknown (no answer that the journal
        could record: the sale stays pending until the processor is asked by its key).  Raises
        :class:`SaleNotRecorded` or :class:`IdempotencyKeyReused` when nothing was charged.
        """
        key = self.idempotency_key(sale_id)
        self._number_receipt(sale_id, masked_card)
        self.journal.begin(sale_id, key, amount_minor, currency, method, shopper_id, token, training)
        failpoints.hit("after_journal_write")
        return self._submit(sale_id, key, token, amount_minor, currency, training)

    def _number_receipt(self, sale_id: str, masked_card: str) -> None:
        """The sale's receipt and trace numbers, before anything is sent (the till and the receipt name them);
        a receipt book that cannot be written is logged and never stops a sale."""
        try:
            self._receipts().number(sale_id, "sale", masked_card)
        except Exception as exc:
            _log.warning("sale %s has no receipt number: %s", sale_id, exc)

    def _submit(self, sale_id, key, token, amount_minor, currency, training) -> ChargeReport:
        outcome: Outcome | None = None
        error = ""
        for _ in range(1 + CHARGE_RETRIES):
            try:
                outcome = self.processor.charge(key, token, amount_minor, currency, training=training)
                break
            except IdempotencyKeyReused as exc:
                self.journal.settle(sale_id, "cancelled", exc.what, "", via="key_refused")
                raise
            except Exception as exc:  # a ProcessorError or any other gateway failure: the outcome is unknown
                error = f"{type(exc).__name__}: {exc}"
                self.journal.step(sale_id, "processor_error", error)
                # The same key is safe to send again; a processor that made the charge answers with it.
                try:
                    outcome = self.processor.lookup(key)
                except Exception:
                    outcome = None
                if outcome is not None:
                    break
        if outcome is None:
            return ChargeReport(sale_id, "unknown", f"no answer from the processor: {error}", "")
        return self._settle(self.journal.get(sale_id), outcome)

    def _settle(self, sale: SaleRecord, outcome: Outcome, via: str = "settled") -> ChargeReport:
        """Record the processor's answer for ``sale``; a journal that cannot be written raises (unknown)."""
        if outcome.status == "cancelled" or outcome.kind != "charge" or outcome.amount_minor != sale.amount_minor:
            reason = (outcome.reason if outcome.status == "cancelled" else
                      f"the processor holds a different request under key {sale.key}: this sale was never charged")
            self.journal.settle(sale.id, "cancelled", reason, "", via=via)
            return ChargeReport(sale.id, "cancelled", reason, "")
        failpoints.hit("after_processor_call")
        self.journal.step(sale.id, "processor_answered", outcome.status)
        failpoints.hit("before_final_journal_write")
        self.journal.settle(sale.id, outcome.status, outcome.reason, outcome.reference, via=via)
        if outcome.status == "approved" and sale.shopper_id:
            try:
                self.store.touch(sale.shopper_id)
            except sqlite3.Error as exc:
                # The money is settled at the processor and in the journal: the shopper was charged.
                # Only the template's last-use date (retention) is stale.
                _log.warning("sale %s approved; the shopper's last-use date was not updated: %s", sale.id, exc)
        return ChargeReport(sale.id, outcome.status, outcome.reason, outcome.reference)

    def resolve(self, sale_id: str) -> ChargeReport | None:
        """Ask the processor by idempotency key about a sale whose outcome is unknown.

        Returns the settled report, or None while the processor cannot say (unreachable, or no
        request with the key has arrived yet).  Never sends a charge.
        """
        sale = self.journal.get(sale_id)
        if sale is None:
            return None
        if sale.status != "pending":  # settled meanwhile (`facepay recover`)
            return ChargeReport(sale.id, sale.status, sale.reason, sale.reference)
        outcome = self.processor.lookup(sale.key)
        return None if outcome is None else self._settle(sale, outcome, via="looked_up")

    def recover(self) -> list[dict]:
        """Settle every sale and operation a crash (or a lost answer) left pending.

        Nothing is charged after the shopper has left (no store-and-forward): each pending sale is
        looked up at the processor by its idempotency key and settled to the processor's answer;
        one whose request never reached the processor is cancelled, and its key is closed at the
        processor so a request still on its way charges nothing.  Voids and refunds are sent again.
        """
        done = []
        for sale in self.journal.pending():
            try:
                outcome = self.processor.lookup(sale.key)
                if outcome is None:  # closing the key returns a charge that arrived meanwhile, unchanged
                    outcome = self.processor.cancel(sale.key)
            except Exception as exc:
                done.append({"sale_id": sale.id, "action": "still pending", "status": "pending",
                             "reason": f"the processor cannot be asked: {exc}"})
                continue
            report = self._settle(sale, outcome, via="recovered")
            done.append({"sale_id": sale.id, "action": "cancelled" if outcome.kind == "cancel" else "looked up",
                         "status": report.status})
        for op in self.journal.pending_operations():
            sale = self.journal.get(op["sale_id"])
            try:
                out = self._reverse_at_processor(op["kind"], op["key"], sale, op["amount_minor"])
            except ProcessorError as exc:
                done.append({"operation": op["key"], "action": "still pending", "reason": str(exc)})
                continue
            self.journal.settle_operation(op["key"], out.status, out.reason)
            done.append({"operation": op["key"], "action": "recovered", "status": out.status})
        return done

    def _reverse_at_processor(self, kind, key, sale: SaleRecord, amount) -> Outcome:
        known = self.processor.lookup(key)
        if known is not None:
            return known
        if kind == "void":
            return self.processor.void(key, sale.key)
        return self.processor.refund(key, sale.key, amount)

    def reverse(self, kind: str, sale_id: str) -> dict:
        """Void or refund a sale in full; asking twice returns the first result."""
        sale = self.journal.get(sale_id)
        if sale is None:
            raise NotFoundError(f"no sale {sale_id}", hint="`facepay sales list` shows the sales")
        if sale.status != "approved":
            raise InputError(f"sale {sale_id} is {sale.status}; only approved sales can be {kind}ed")
        key = f"{sale.key}:{kind}"
        existing = self.journal.operation(key)
        if existing and existing["status"] != "pending":
            return existing | {"repeated": True}
        other = "refund" if kind == "void" else "void"
        if (o := self.journal.operation(f"{sale.key}:{other}")) and o["status"] == "approved":
            raise InputError(f"sale {sale_id} was already {'refunded' if other == 'refund' else 'voided'}")
        self.journal.begin_operation(key, sale_id, kind, sale.amount_minor)
        if kind == "void":
            failpoints.hit("after_void_journal_write")
        out = self._reverse_at_processor(kind, key, sale, sale.amount_minor)
        if kind == "refund":
            failpoints.hit("after_refund_processor_call")
        self.journal.settle_operation(key, out.status, out.reason)
        return self.journal.operation(key) | {"repeated": False}

    def report_zone(self):
        """The terminal's time zone (``[terminal] timezone``), or None for the system's own."""
        return ZoneInfo(self.cfg.terminal.timezone) if self.cfg.terminal.timezone else None

    def report_day(self, day: date | None = None) -> dict:
        """One day's takings, midnight to midnight in the terminal's time zone.

        Training sales are listed apart and never counted in the totals or the net.
        """
        zone = self.report_zone()
        now = datetime.now(zone) if zone else datetime.now().astimezone()
        day = day or now.date()

        def midnight(d: date) -> datetime:
            # The system's zone: a naive local midnight converted by the C library's rules (DST included).
            return datetime(d.year, d.month, d.day, tzinfo=zone) if zone else datetime(d.year, d.month, d.day).astimezone()

        start, end = midnight(day), midnight(day + timedelta(days=1))
        sales = self.journal.sales(start.astimezone(timezone.utc).isoformat(timespec="microseconds"),
                                   end.astimezone(timezone.utc).isoformat(timespec="microseconds"))
        counted = [s for s in sales if not s.training]
        report = {"day": day.isoformat(), "timezone": zone.key if zone else f"system ({now.tzname()})",
                  "from": start.isoformat(), "until": end.isoformat(),
                  "currency": self.cfg.payment.currency, "by_method": {}, "totals": {}}
        for s in counted:
            buckets = [s.status] + (["voided"] if s.voided else []) + (["refunded"] if s.refunded_minor else [])
            for group in (report["by_method"].setdefault(s.method, {}), report["totals"]):
                for b in buckets:
                    entry = group.setdefault(b, {"count": 0, "sum_minor": 0})
                    entry["count"] += 1
                    entry["sum_minor"] += s.refunded_minor if b == "refunded" else s.amount_minor
        approved = report["totals"].get("approved", {"sum_minor": 0})["sum_minor"]
        report["net_minor"] = (approved - report["totals"].get("voided", {"sum_minor": 0})["sum_minor"]
                               - report["totals"].get("refunded", {"sum_minor": 0})["sum_minor"])
        report["sales"] = len(counted)
        report["training"] = [{"sale_id": s.id, "created_at": s.created_at, "method": s.method,
                               "amount_minor": s.amount_minor, "status": s.status}
                              for s in sales if s.training]
        return report


def report_lines(r: dict) -> list[str]:
    """The day report as text, for the CLI and the staff screen."""
    from .money import format_amount

    cur = r["currency"]
    lines = [f"Day report {r['day']} ({r['sales']} sale{'' if r['sales'] == 1 else 's'}), {r['timezone']}"]
    for method, buckets in sorted(r["by_method"].items()):
        for status, v in sorted(buckets.items()):
            lines.append(f"  {method:<14} {status:<9} {v['count']:>4}  {format_amount(v['sum_minor'], cur):>12}")
    lines.append(f"  net {format_amount(r['net_minor'], cur)}")
    if r["training"]:
        lines.append(f"Training sales, not counted above ({len(r['training'])}):")
        lines += [f"  {t['sale_id']}  {t['method']:<5} {t['status']:<9} {format_amount(t['amount_minor'], cur):>12}"
                  for t in r["training"]]
    return lines

