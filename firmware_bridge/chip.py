"""The PN532 itself, as a pure model: bytes heard on its RX line in, bytes for its TX line out, no I/O.

:class:`PN532Chip` keeps what the chip keeps (power state, line speed, the command it is running,
its registers, the card in the field) and answers as the chip does over HSU. The pseudo-terminal
that carries those bytes, and the faults of a bad cable, are :mod:`firmware_bridge.sim`'s.

Power states, as in the PN532 user manual (UM0701): the chip starts in LowVbat; there, and after
PowerDown (with HSU among its wake-up sources), any byte on its RX line wakes it, whatever its
value; the bytes that arrive while it wakes (:data:`WAKE_UP_DELAY` of line time, counted at the
current baud rate from the first byte) are lost; then it answers. Each byte heard takes its place
on the line (10 bit times each, back to back) to decide which ones fall inside the wake-up.

Otherwise: ignores leading 55 bytes; ACKs each good command, then answers; answers a host NACK by
sending its last answer again; NACKs a command whose checksum fails; answers GetFirmwareVersion
with 32 01 06 07; answers InListPassiveTarget only while a card is present (or with zero targets
when the host set finite retries with RFConfiguration), and drops that command when the host sends
an ACK; handles extended frames, Diagnose, the CIU registers drivers read, and SetSerialBaudRate
(the new speed applies when the host ACKs the answer); answers unknown commands with the
application error frame.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from . import frames
from .commands import BAUD_RATES, CIU_FIFO_DATA, PARAM_AUTOMATIC_RATS, POWER_DOWN_WAKE_HSU, RF_ITEM_MAX_RETRIES, Command

FIRMWARE = bytes([0x32, 0x01, 0x06, 0x07])
# Wake-up time from LowVbat or PowerDown.  Bounded by what works and fails on real chips at
# 115200 baud: nfcpy's ten zero bytes (0.87 ms of line) are enough, libnfc's old five-byte
# preamble 55 55 00 00 00 (0.43 ms) was not (it lost the command after PowerDown).
WAKE_UP_DELAY = 0.00065
RANDOM = "random"
# What a phone (Apple Pay / Google Pay) or a bank card shows: ISO/IEC 14443-4, and an ATS
# (TL T0 TA TB TC, one historical byte).
PHONE_ATS = bytes.fromhex("067577810280")


def random_uid(rng: random.Random) -> bytes:
    """A single-size random ID as ISO/IEC 14443-3 defines it: 08 then three random bytes."""
    return bytes([0x08]) + bytes(rng.randrange(256) for _ in range(3))


def target_bytes(uid: bytes, ats: bytes = b"") -> bytes:
    """Tg SENS_RES(2) SEL_RES NFCIDLen NFCID [ATS] for a card of this UID size (with ATS: ISO 14443-4)."""
    if ats:
        return bytes([0x01, 0x00, 0x04, 0x20, len(uid)]) + uid + ats
    sens, sel = {4: (b"\x00\x04", 0x08), 7: (b"\x00\x44", 0x00), 10: (b"\x00\x84", 0x00)}[len(uid)]
    return bytes([0x01]) + sens + bytes([sel, len(uid)]) + uid


class PN532Chip:
    """One PN532. Every method that the host's bytes drive returns the bytes the chip sends back, in order."""

    def __init__(self, card: bytes | str | None = None, *, rng: random.Random | None = None,
                 wake_delay: float = WAKE_UP_DELAY, log: list[tuple[str, bytes]] | None = None):
        self.card = card            # a UID, RANDOM (a phone), or None
        self.rng = rng or random.Random()
        self.wake_delay = wake_delay
        self.log = [] if log is None else log      # ("lost", bytes) entries, beside the transport's own
        self.activations: list[bytes] = []        # the UID shown at each activation, for tests
        self._out: list[bytes] = []
        self._handlers: dict[int, Callable[[bytes], None]] = {
            Command.GET_FIRMWARE_VERSION: self._get_firmware_version,
            Command.SAM_CONFIGURATION: self._acknowledge,
            Command.IN_LIST_PASSIVE_TARGET: self._in_list_passive_target,
            Command.IN_RELEASE: self._in_release,
            Command.IN_DESELECT: self._in_release,
            Command.SET_SERIAL_BAUD_RATE: self._set_serial_baud_rate,
            Command.RF_CONFIGURATION: self._rf_configuration,
            Command.READ_REGISTER: self._read_register,
            Command.WRITE_REGISTER: self._write_register,
            Command.SET_PARAMETERS: self._set_parameters,
            Command.GET_GENERAL_STATUS: self._get_general_status,
            Command.POWER_DOWN: self._power_down,
            Command.DIAGNOSE: self._diagnose,
            Command.IN_DATA_EXCHANGE: self._in_data_exchange,
        }
        self.power_up()

    def power_up(self) -> None:
        """Power-up: LowVbat, 115200 baud, nothing pending."""
        self.power = "lowvbat"      # lowvbat | powerdown | awake
        self.baudrate = 115200
        self._hsu_wakes = True
        self._wake_until: float | None = None
        self._line_free = 0.0       # when the last received byte ended, in line time
        self._rx = b""
        self._last_answer: bytes | None = None
        self._pending_list: bytes | None = None   # params of a waiting InListPassiveTarget
        self._pending_baud: int | None = None
        self._finite_retries = False
        self._card_selected = False
        self._registers: dict[int, int] = {}
        self._auto_rats = True      # SetParameters fAutomaticRATS, on after power-up

    @property
    def asleep(self) -> bool:
        return self.power != "awake"

    @property
    def changing_speed(self) -> bool:
        """SetSerialBaudRate was answered and the chip waits for the host's ACK to switch."""
        return self._pending_baud is not None

    @property
    def listing(self) -> bool:
        """An InListPassiveTarget waits for a card."""
        return self._pending_list is not None

    # -- the field --------------------------------------------------------------------
    def present(self, uid: bytes | str) -> None:
        """Put a card in the field: a UID, or :data:`RANDOM` for a phone showing a new random UID each time."""
        if isinstance(uid, str):
            if uid != RANDOM:
                raise ValueError(f"a card is a UID or {RANDOM!r}, not {uid!r}")
            self.card = RANDOM
            return
        if len(uid) not in (4, 7, 10):
            raise ValueError("ISO 14443A UIDs have 4, 7 or 10 bytes")
        self.card = bytes(uid)

    def remove(self) -> None:
        self.card = None
        self._card_selected = False

    # -- what the host drives -----------------------------------------------------------
    def hear(self, chunk: bytes, now: float) -> list[bytes]:
        """Bytes arrived on the RX line at ``now`` (seconds, any monotonic clock)."""
        chunk = self._on_the_line(chunk, now)
        if chunk:
            self._rx += chunk
            while self._rx:
                buf = self._rx.lstrip(b"\x55")
                if not buf:
                    self._rx = b""
                    break
                r = frames.parse(buf)
                self._rx = buf[r.consumed:]
                if r.problem == "checksum":
                    self._out.append(frames.NACK)
                if r.frame is not None:
                    self._frame(r.frame)
                if r.consumed == 0:
                    break
        return self._take()

    def host_flushed_output(self) -> list[bytes]:
        """The host discarded bytes it had written and the line had not carried yet (tcflush TCOFLUSH).

        On a UART those bytes were already in the transmit FIFO and reached the chip. The one place a
        driver writes and flushes at once is the ACK that completes SetSerialBaudRate (nfcpy reopens
        the port at the new speed right after it), so while the chip waits for that ACK, the flush
        stands for it.
        """
        if self._pending_baud is not None:
            self._frame(frames.Frame("ack"))
        return self._take()

    def serve_pending(self) -> list[bytes]:
        """A waiting InListPassiveTarget answers once a type A card is in the field."""
        self._serve_pending_list()
        return self._take()

    # -- inside -------------------------------------------------------------------------
    def _take(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def _answer(self, data: bytes) -> None:
        frame = frames.encode(data, tfi=frames.PN532_TO_HOST)
        self._last_answer = frame
        self._out.append(frame)

    def _on_the_line(self, chunk: bytes, now: float) -> bytes:
        """What the chip hears of ``chunk``: all of it when awake; what follows the wake-up otherwise."""
        bit_time = 10 / self.baudrate      # start bit, 8 data bits, stop bit
        start = max(now, self._line_free)
        self._line_free = start + len(chunk) * bit_time
        if self.power != "awake":
            if self.power == "powerdown" and not self._hsu_wakes:
                self.log.append(("lost", chunk))
                return b""                  # the host did not allow the HSU to wake it
            self.power = "awake"            # any byte wakes it, whatever its value
            self._wake_until = start + self.wake_delay
        if self._wake_until is None:
            return chunk
        lost = min(len(chunk), max(0, math.ceil((self._wake_until - start) / bit_time - 1e-9)))
        if start + lost * bit_time >= self._wake_until:
            self._wake_until = None
        if lost:
            self.log.append(("lost", chunk[:lost]))
        return chunk[lost:]

    def _frame(self, f: frames.Frame) -> None:
        if f.kind == "ack":
            if self._pending_baud is not None:
                self.baudrate, self._pending_baud = self._pending_baud, None
            self._pending_list = None  # a host ACK aborts the running command
            return
        if f.kind == "nack":
            if self._last_answer is not None:
                self._out.append(self._last_answer)
            return
        if f.kind != "data" or f.tfi != frames.HOST_TO_PN532 or not f.data:
            return
        if self.power != "awake":
            return
        self._out.append(frames.ACK)
        self._command(f.data[0], f.data[1:])

    def _command(self, code: int, p: bytes) -> None:
        handler = self._handlers.get(code)
        if handler is None:
            self._out.append(frames.ERROR_FRAME)
            return
        self._code = Command(code)
        handler(p)

    def _reply(self, body: bytes = b"") -> None:
        self._answer(bytes([self._code.reply]) + body)

    # -- the commands, by name ---------------------------------------------------------
    def _acknowledge(self, p: bytes) -> None:
        self._reply()

    def _get_firmware_version(self, p: bytes) -> None:
        self._reply(FIRMWARE)

    def _in_list_passive_target(self, p: bytes) -> None:
        if len(p) < 2 or p[0] not in (1, 2) or p[1] > 4:
            self._out.append(frames.ERROR_FRAME)
            return
        self._pending_list = p
        self._serve_pending_list(immediate=True)

    def _in_release(self, p: bytes) -> None:           # InRelease and InDeselect
        self._card_selected = False
        self._reply(b"\x00")

    def _set_serial_baud_rate(self, p: bytes) -> None:
        if not p or p[0] >= len(BAUD_RATES):
            self._out.append(frames.ERROR_FRAME)
            return
        self._pending_baud = BAUD_RATES[p[0]]
        self._reply()

    def _rf_configuration(self, p: bytes) -> None:
        if p[:1] == bytes([RF_ITEM_MAX_RETRIES]) and len(p) >= 4:   # MxRtyPassiveActivation
            self._finite_retries = p[3] != 0xFF
        self._reply()

    def _read_register(self, p: bytes) -> None:         # 2-byte addresses
        addrs = [(p[i] << 8) | p[i + 1] for i in range(0, len(p) - 1, 2)]
        self._reply(bytes(self._registers.get(a, 0) for a in addrs))

    def _write_register(self, p: bytes) -> None:        # address (2) + value
        for i in range(0, len(p) - 2, 3):
            self._registers[(p[i] << 8) | p[i + 1]] = p[i + 2]
        self._reply()

    def _set_parameters(self, p: bytes) -> None:        # Flags
        if p:
            self._auto_rats = bool(p[0] & PARAM_AUTOMATIC_RATS)
        self._reply()

    def _get_general_status(self, p: bytes) -> None:
        self._reply(bytes([0x00, 0x01 if self.card else 0x00, 0x00, 0x80]))

    def _power_down(self, p: bytes) -> None:            # WakeUpEnable [GenerateIRQ]
        if not p:
            self._out.append(frames.ERROR_FRAME)
            return
        self.power = "powerdown"                       # asleep once the answer is out
        self._hsu_wakes = bool(p[0] & POWER_DOWN_WAKE_HSU)
        self._pending_list = None
        self._rx = b""                                 # what follows is heard only after a wake-up
        self._reply(b"\x00")

    def _diagnose(self, p: bytes) -> None:              # echo back the test data
        self._reply(p)

    def _in_data_exchange(self, p: bytes) -> None:
        self._reply(bytes([0x00 if self.card and self._card_selected else 0x01]))

    def _activate(self) -> bytes:
        """The target bytes of the card in the field; a phone shows a new random UID each time."""
        if self.card == RANDOM:
            uid = random_uid(self.rng)
            self.activations.append(uid)
            if self._auto_rats:
                return target_bytes(uid, PHONE_ATS)
            return bytes([0x01, 0x00, 0x04, 0x20, len(uid)]) + uid      # SAK 20, no RATS sent
        card = self.card
        if not isinstance(card, bytes):
            raise RuntimeError("activation with no card in the field")
        self.activations.append(card)
        return target_bytes(card)

    def _serve_pending_list(self, immediate: bool = False) -> None:
        if self._pending_list is None:
            return
        type_a = self._pending_list[1] == 0x00     # the field holds type A (106 kbps) cards only
        reply = bytes([Command.IN_LIST_PASSIVE_TARGET.reply])
        if self.card is not None and type_a:
            self._pending_list = None
            self._card_selected = True
            self._answer(reply + b"\x01" + self._activate())
        elif immediate and self._finite_retries:
            self._pending_list = None
            if type_a:
                self._registers[CIU_FIFO_DATA] = 0x26   # the REQA still in the FIFO: nobody answered
            self._answer(reply + b"\x00")
