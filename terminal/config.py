"""The terminal's configuration: one TOML file parsed into typed, range-checked sections.

The file is found from ``--config``, else ``$FACEPAY_CONFIG``, else the
built-in defaults.  Only ``terminal_id`` is needed in a file (a file without it is
refused, except by ``run --demo`` and ``doctor --demo``); every other
setting has a default, and the defaults are the real hardware: the Pi camera
(``picamera2``), the PN532 on ``/dev/serial0`` and LEDs on GPIO.  The
simulators (replay camera, PN532 simulator ``port = "sim"``, mock LEDs) are
used only with ``facepay run --demo`` or when the config names them.  Unknown
keys, wrong types and values out of range raise one :class:`ConfigError`
naming the key and the file (exit status 2), so the terminal never starts
half-configured.

Example ``terminal.toml``::

    terminal_id = "shop-12-till-1"
    face_pay = true

    [camera]
    backend = "picamera2"
    width = 640
    height = 480

    [reader]
    port = "/dev/serial0"

    [leds]
    backend = "gpio"
    privacy = 17

    [staff]
    pin_hash = "scrypt$..."     # from `facepay staff-pin`; `facepay run` refuses to start without it

How a section is declared (the pattern to follow when adding one)
-----------------------------------------------------------------
Every section is a frozen pydantic v2 dataclass made with ``@section``; the
checks live in the type of each key, so there is no hand-written validation::

    @section
    class LivenessConfig:
        required: Flag = True
        # a number with its range: pydantic's Field(gt/ge/lt/le); NaN and inf are always refused
        max_yaw: Annotated[Number, Field(ge=0, le=1)] = 0.35
        challenges: Annotated[Whole, Field(ge=1, le=10)] = 2
        kind: Literal["blink", "turn"] = "turn"        # a choice

then add it to :class:`Config` as ``liveness: LivenessConfig = field(default_factory=LivenessConfig)``
(the TOML table ``[liveness]``).  A rule on one value that a range cannot say
is an ``AfterValidator`` raising ``ValueError("what is wrong")`` (see
:data:`Currency`); a rule across keys goes in :func:`_cross_checks`.  Error
messages, ``facepay config`` (TOML, written with tomli-w) and ``facepay config
--json`` follow from the declaration; document the key in the README's
configuration section.

Building a section in code (``CameraConfig(backend="replay")``,
``dataclasses.replace(cfg.camera, fps=5.0)``) runs the same checks.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli_w
from pydantic import AfterValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from .errors import ConfigError
from .fleet.settings import FleetConfig
from .fleet.settings import validate as validate_fleet
from .modes import Mode

# Values as TOML gives them, no silent conversions: "3" is not a number and true is not 1.
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]   # an integer is accepted for a number
Whole = Annotated[int, Strict()]
Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]
Positive = Annotated[Number, Field(gt=0)]
Fraction = Annotated[Number, Field(ge=0, le=1)]
Seconds = Annotated[Number, Field(gt=0, le=3600)]
Gpio = Annotated[Whole, Field(ge=0, le=27)]            # a Raspberry Pi BCM GPIO number
Distance = Annotated[Number, Field(ge=0, le=2)]        # between unit-length face descriptors
# The largest match threshold docs/privacy.md measured (0 of 91 impostor pairs matched at 0.45-0.60; the
# nearest impostor pair was 0.699 apart); dlib's own operating point is 0.6.  Above it the false-match
# rate is unmeasured, so a larger value is refused, not warned about: a warning in a log is read by no
# one while strangers are being matched.
MAX_MEASURED_THRESHOLD = 0.60
DEMO_TERMINAL_ID = "demo-terminal"   # the built-in defaults' and `run --demo`'s, never a configured terminal's
DEFAULTS_SOURCE = "<built-in defaults>"


@functools.cache
def tender_currencies() -> frozenset[str]:
    """ISO 4217 codes that are legal tender somewhere today (Babel's copy of the CLDR data)."""
    from babel.core import get_global

    return frozenset(code for entries in get_global("territory_currencies").values()
                     for code, _start, end, tender in entries if end is None and tender)


def _iso4217(code: str) -> str:
    if code not in tender_currencies():
        raise ValueError("must be an ISO 4217 currency code in use, in capitals (e.g. EUR, USD, GBP, XOF)")
    return code


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _iana_zone(name: str) -> str:
    if name:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError('must be an IANA time zone name such as "Europe/Berlin" (`timedatectl list-timezones` '
                             "lists them; leave the key out for the system's zone)") from None
    return name


Currency = Annotated[Text, AfterValidator(_iso4217)]
Zone = Annotated[Text, AfterValidator(_iana_zone)]
NotBlank = Annotated[Text, AfterValidator(_not_blank)]

_RULES = ConfigDict(extra="forbid", allow_inf_nan=False)
section = dataclass(frozen=True, config=_RULES)

CameraBackend = Literal["picamera2", "opencv", "replay"]
LedBackend = Literal["gpio", "mock"]
Processor = Literal["sandbox"]
DetectorModel = Literal["short", "full"]

# The parts that are simulators, named by the config; outside --demo they are reported as warnings.
SIMULATED_READER_PORTS = ("sim", "loop://")


@section
class CameraConfig:
    backend: CameraBackend = "picamera2"
    device: Annotated[Whole, Field(ge=0, le=255)] = 0   # /dev/videoN
    width: Annotated[Whole, Field(ge=64, le=4096)] = 640
    height: Annotated[Whole, Field(ge=48, le=4096)] = 480
    fps: Annotated[Number, Field(gt=0, le=120)] = 10.0
    # replay backend: a folder of images or a video file; empty means the demo faces.
    replay_path: Text = ""
    loop: Flag = True
    # replay backend: the scene's clock against the wall clock; below 1 the scene plays in slow motion
    # (frames stamped in the scene's time), for a kiosk run under emulation (make arm64-check).
    replay_speed: Annotated[Number, Field(ge=0.01, le=1)] = 1.0


@section
class DetectorConfig:
    model: DetectorModel = "short"
    min_confidence: Fraction = 0.75
    min_eye_distance_px: Annotated[Number, Field(ge=0, le=1000)] = 28.0
    max_yaw: Fraction = 0.35
    max_roll_deg: Annotated[Number, Field(ge=0, le=90)] = 25.0
    min_sharpness: Annotated[Number, Field(ge=0, le=100_000)] = 15.0   # variance of the Laplacian
    min_brightness: Annotated[Number, Field(ge=0, le=255)] = 50.0
    max_brightness: Annotated[Number, Field(ge=0, le=255)] = 215.0


@section
class MatchConfig:
    threshold: Annotated[Distance, Field(gt=0, le=MAX_MEASURED_THRESHOLD)] = 0.55
    margin: Distance = 0.06
    # Consent asks for the phone digits when the margin is below this...
    stepup_margin: Distance = 0.15
    # ...or when an unenrolled face would match somebody in the gallery with
    # more than this probability: 1 - (1 - f) ** N.
    stepup_false_match_bound: Annotated[Number, Field(gt=0, le=1)] = 0.001
    # f: the false-match probability of one comparison at the threshold:
    # the 95% upper bound measured on the photos we have (docs/privacy.md).
    false_match_rate: Annotated[Number, Field(gt=0, lt=1)] = 0.033
    enrol_captures: Annotated[Whole, Field(ge=3, le=20)] = 3
    scan_timeout_s: Seconds = 15.0


@section
class ReaderConfig:
    # A pyserial URL: "loop://", a pty path, "/dev/serial/by-id/...".
    # "sim" starts the PN532 simulator on a pseudo-terminal (the demo).
    port: NotBlank = "/dev/serial0"
    baudrate: Annotated[Whole, Field(ge=9600, le=1_000_000)] = 115200
    poll_interval_s: Annotated[Number, Field(gt=0, le=10)] = 0.15
    timeout_s: Annotated[Number, Field(gt=0, le=60)] = 0.5


@section
class LedConfig:
    backend: LedBackend = "gpio"
    privacy: Gpio = 17
    consent: Gpio = 27
    approved: Gpio = 22
    declined: Gpio = 23
    fault: Gpio = 24


@section
class PaymentConfig:
    processor: Processor = "sandbox"
    currency: Currency = "EUR"
    merchant: Text = "Demo Corner Shop"
    consent_timeout_s: Seconds = 20.0


@section
class StaffConfig:
    # scrypt hash from `facepay staff-pin`.  Empty: `facepay run` refuses to start, except with
    # --demo, where the public demo PIN 2580 opens the staff screens.
    pin_hash: Text = ""


@section
class RetentionConfig:
    template_days: Annotated[Whole, Field(ge=1, le=36500)] = 1095


@section
class LivenessConfig:
    # The head-turn challenge before any face match or enrolment capture (docs/privacy.md).
    # false only for tests; recorded in the consent ledger whenever a face step runs without it.
    required: Flag = True
    min_yaw_deg: Annotated[Number, Field(ge=8, le=40)] = 15.0       # the turn asked for, degrees of head yaw
    # the nose off the plane of the rest of the face, in eye distances: still range-checked and reported,
    # no longer decides (a bent print passes it; relief_min decides, docs/privacy.md)
    planarity_min: Annotated[Number, Field(ge=0.005, le=0.5)] = 0.055
    timeout_s: Annotated[Number, Field(ge=1, le=30)] = 4.0          # from the first face seen to the turn
    # the nose tip out of the surface around it, from the texture's motion over the turn, in eye distances
    # 0.097: the geometric mean of the tuning split's largest attack relief (0.058) and smallest genuine
    # one (0.163) (benchmarks/liveness_pad.py --split tuning, docs/privacy.md)
    relief_min: Annotated[Number, Field(ge=0.005, le=0.5)] = 0.097
    # image continuity: tracked points off the mesh or off their own backward track, in eye distances
    flow_max: Annotated[Number, Field(ge=0.01, le=1)] = 0.08
    max_yaw_rate_dps: Annotated[Number, Field(ge=60, le=2000)] = 300.0   # head yaw speed between two frames
    min_turn_frames: Annotated[Whole, Field(ge=1, le=10)] = 2       # frames between 10% and 90% of the turn


@section
class AccessibilityConfig:
    # the kiosk's speech and cues (terminal/speech.py): "espeak-ng" plays them, "silent" only logs them
    speech: Literal["espeak-ng", "silent"] = "espeak-ng"
    speech_on: Flag = False                                     # speak from start-up, without headphones
    volume: Annotated[Whole, Field(ge=0, le=200)] = 100         # espeak-ng amplitude (100 = its default)
    speed: Annotated[Whole, Field(ge=80, le=400)] = 150         # words per minute
    headphone_gpio: Annotated[Whole, Field(ge=-1, le=27)] = -1  # the jack's switch contact (BCM); -1: none
    language: Literal["en", "de", "fr", "es", "zh"] = "en"      # the attract screen's language
    # a second keypad of push buttons to ground on GPIO inputs (BCM; terminal/buttons.py); -1: no such button
    button_prev_gpio: Annotated[Whole, Field(ge=-1, le=27)] = -1       # focus to the previous button
    button_next_gpio: Annotated[Whole, Field(ge=-1, le=27)] = -1       # focus to the next button
    button_enter_gpio: Annotated[Whole, Field(ge=-1, le=27)] = -1      # press the focused button
    button_back_gpio: Annotated[Whole, Field(ge=-1, le=27)] = -1       # Cancel / Back / No thanks
    button_more_time_gpio: Annotated[Whole, Field(ge=-1, le=27)] = -1  # More time


@section
class TerminalConfig:
    # IANA name ("Europe/Berlin"): report days run midnight to midnight here. Empty: the system's zone.
    timezone: Zone = ""


def _zvt_password(text: str) -> str:
    if not (len(text) == 6 and text.isdigit()):
        raise ValueError("must be exactly 6 digits (ZVT's registration password), e.g. \"000000\"")
    return text


def _host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError('must be HOST:PORT, e.g. "127.0.0.1:20007" (an address of this terminal, port 1-65535)')
    return text


def _printer(text: str) -> str:
    kind, _, rest = text.partition(":")
    ok = not text or (kind in ("usb", "serial", "network") and rest)
    if ok and kind == "usb":
        parts = rest.split(":")
        ok = len(parts) == 2 and all(len(p) == 4 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts)
    if not ok:
        raise ValueError('must be empty (no printer), "usb:VID:PID" (hex, e.g. "usb:04b8:0202"), '
                         '"serial:/dev/ttyUSB0[:BAUD]" or "network:HOST[:PORT]"')
    return text


ZvtPassword = Annotated[Text, AfterValidator(_zvt_password)]
HostPort = Annotated[Text, AfterValidator(_host_port)]
PrinterSpec = Annotated[Text, AfterValidator(_printer)]
TillTransport = Literal["none", "serial", "tcp"]


@section
class TillConfig:
    # how the shop's till (ECR) sends amounts: ZVT over a serial line, over TCP, or none (the staff keypad)
    transport: TillTransport = "none"
    device: Text = ""                       # serial: the tty (e.g. "/dev/serial/by-id/usb-FTDI...")
    baudrate: Annotated[Whole, Field(ge=1200, le=115200)] = 9600
    listen: HostPort = "127.0.0.1:20007"    # tcp: the one listener's address; loopback unless set here
    password: ZvtPassword = "000000"        # the registration password the till must send


@section
class ReceiptConfig:
    printer: PrinterSpec = ""               # ESC/POS printer; empty: no printer (till print lines, QR code)
    location: Text = ""                     # the shop's address line(s) under its name ([payment] merchant)
    width: Annotated[Whole, Field(ge=24, le=64)] = 40   # characters per receipt line
    qr: Flag = True                         # the customer receipt as a QR code on the result screen


@section
class Config:
    terminal_id: NotBlank = DEMO_TERMINAL_ID
    face_pay: Flag = True
    mode: Mode = Mode.NORMAL               # the names, once: terminal.modes
    data_dir: Text = ""
    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    leds: LedConfig = field(default_factory=LedConfig)
    payment: PaymentConfig = field(default_factory=PaymentConfig)
    staff: StaffConfig = field(default_factory=StaffConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    terminal: TerminalConfig = field(default_factory=TerminalConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    accessibility: AccessibilityConfig = field(default_factory=AccessibilityConfig)
    # [fleet]: absent (no nats_url) = the terminal works alone (terminal/fleet/)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    # [till]: the shop's cash register over ZVT (terminal/till/); [receipt]: receipts (terminal/receipts.py)
    till: TillConfig = field(default_factory=TillConfig)
    receipt: ReceiptConfig = field(default_factory=ReceiptConfig)
    source: Text = DEFAULTS_SOURCE   # where it was read from; not a key of the file


_ADAPTER = TypeAdapter(Config)
_TYPE_WORDS = {
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "literal_error": None,   # pydantic's own words name the choices
    "finite_number": "must be a finite number (nan and inf are refused)",
}


def _config_error(exc: ValidationError, source: str) -> ConfigError:
    """The first problem pydantic found, as one line naming the key."""
    err = exc.errors(include_url=False)[0]
    key = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "unexpected_keyword_argument":
        return ConfigError(f"unknown key '{key}'", source,
                           "check its spelling against the README's configuration section")
    if kind == "dataclass_type":
        return ConfigError(f"'{key}' must be a table ([{key}])", source)
    if kind == "value_error":
        what = str(err["ctx"]["error"])
    elif key == "match.threshold" and kind == "less_than_equal":
        return ConfigError(f"'match.threshold' must be at most {MAX_MEASURED_THRESHOLD}, not {err['input']!r}: "
                           "above that the false-match rate was never measured and strangers may match", source,
                           "see the false-match table in docs/privacy.md; 0.55 is the measured default")
    else:
        what = _TYPE_WORDS.get(kind) or err["msg"].replace("Input should be", "must be", 1)
    return ConfigError(f"'{key}' {what}, not {err['input']!r}", source)


def _cross_checks(cfg: Config) -> None:
    """Rules across keys, which a range on one key cannot say."""
    src = cfg.source
    pins = [cfg.leds.privacy, cfg.leds.consent, cfg.leds.approved, cfg.leds.declined, cfg.leds.fault]
    if len(set(pins)) != len(pins):
        raise ConfigError("the LED pins in [leds] must all be different", src)
    if cfg.detector.min_brightness >= cfg.detector.max_brightness:
        raise ConfigError("'detector.min_brightness' must be below 'detector.max_brightness'", src)
    _button_checks(cfg)
    validate_fleet(cfg.fleet, cfg.terminal_id, src)
    _till_checks(cfg)


def _button_checks(cfg: Config) -> None:
    """The accessibility inputs (jack, buttons) each on a pin of their own, and none on an LED's pin."""
    a = cfg.accessibility
    keys = ["headphone_gpio", "button_prev_gpio", "button_next_gpio", "button_enter_gpio", "button_back_gpio",
            "button_more_time_gpio"]
    used: dict[int, str] = {}
    for key in keys:
        pin = getattr(a, key)
        if pin < 0:
            continue
        if pin in used:
            raise ConfigError(f"'accessibility.{key}' and 'accessibility.{used[pin]}' are both GPIO {pin}", cfg.source,
                              "give each button and the headphone jack a pin of its own, or -1 for none")
        used[pin] = key
    leds = {getattr(cfg.leds, n): n for n in ("privacy", "consent", "approved", "declined", "fault")}
    for pin, key in used.items():
        if pin in leds:
            raise ConfigError(f"'accessibility.{key}' is GPIO {pin}, the pin of 'leds.{leds[pin]}'", cfg.source,
                              "an input cannot share an LED's output pin: pick a free one")
    buttons = [k for k in keys[1:] if getattr(a, k) >= 0]
    if buttons and not {"button_next_gpio", "button_enter_gpio"} <= set(buttons):
        raise ConfigError("GPIO buttons need at least 'accessibility.button_next_gpio' and "
                          "'accessibility.button_enter_gpio'", cfg.source,
                          "without them the focus cannot reach or press a button; set both, or all of the "
                          "button_*_gpio keys to -1")


def _till_checks(cfg: Config) -> None:
    """[till]: a serial link needs its device; ZVT needs a numeric currency code it knows."""
    till = cfg.till
    if till.transport == "serial" and not till.device.strip():
        raise ConfigError("'till.device' must name the serial device when till.transport = \"serial\"", cfg.source,
                          'e.g. device = "/dev/ttyUSB0"')
    if till.transport != "none":
        from .till.messages import CURRENCY_NUMBERS

        if cfg.payment.currency not in CURRENCY_NUMBERS:
            raise ConfigError(f"'payment.currency' {cfg.payment.currency} has no ZVT currency number here "
                              f"(known: {', '.join(sorted(CURRENCY_NUMBERS))})", cfg.source,
                              'set till.transport = "none" or use one of those currencies')


def parse_config(text: str, source: str, demo: bool = False) -> Config:
    """Parse TOML text into a :class:`Config`; ``source`` names the file in errors.

    ``terminal_id`` is required (it is in every payment's idempotency key and the ledger's genesis
    entry); only ``demo`` (``run --demo``, ``doctor --demo``) lets a file leave it out."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source, "fix the syntax at that line") from None
    if "terminal_id" not in table and not demo:
        raise ConfigError("'terminal_id' is required", source,
                          'add a line such as terminal_id = "shop-12-till-1", unique to this terminal: it is part of '
                          "every payment's idempotency key")
    if "source" in table:
        raise ConfigError("unknown key 'source'", source, "check its spelling against the README's configuration section")
    try:
        cfg = _ADAPTER.validate_python({**table, "source": source})
    except ValidationError as exc:
        raise _config_error(exc, source) from None
    _cross_checks(cfg)
    return cfg


def load_config(path: str | os.PathLike | None = None, demo: bool = False) -> Config:
    """Load ``path``, else ``$FACEPAY_CONFIG``, else the built-in defaults (terminal id ``demo-terminal``)."""
    if path is None:
        path = os.environ.get("FACEPAY_CONFIG") or None
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", str(p), "pass --config with an existing file") from None
    except IsADirectoryError:
        raise ConfigError("is a folder, not a config file", str(p)) from None
    except PermissionError:
        raise ConfigError("config file is not readable", str(p), "check its owner and mode") from None
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8 text", str(p)) from None
    return parse_config(text, str(p), demo=demo)


def to_dict(cfg) -> dict:
    """The settings as plain tables (without ``source``): what ``to_toml`` and ``config --json`` print."""
    table = dataclasses.asdict(cfg)
    table.pop("source", None)
    return table


def to_toml(cfg) -> str:
    """Render a config (or one section) as TOML with tomli-w: always valid TOML, read back unchanged."""
    return tomli_w.dumps(to_dict(cfg))


def simulated_parts(cfg: Config) -> list[str]:
    """The parts of this config that are simulators, not hardware (outside --demo: warnings)."""
    out = []
    if cfg.camera.backend == "replay":
        out.append("camera: replay camera (recorded pictures, not a camera)")
    if cfg.reader.port in SIMULATED_READER_PORTS:
        out.append(f"card reader: simulated ({cfg.reader.port!r}, not a PN532)")
    if cfg.leds.backend == "mock":
        out.append("LEDs: mock pins (no LED lights up)")
    if cfg.payment.processor == "sandbox":
        out.append("payment processor: sandbox (no money moves; no other processor is built in yet)")
    return out
