"""The terminal's configuration: one TOML file parsed into typed dataclasses.

The file is found from ``--config``, else ``$FACEPAY_CONFIG``, else the
built-in defaults (the demo setup).  Only ``terminal_id`` is needed in a file;
every other setting has a default.  Unknown keys and wrong types raise one
:class:`ConfigError` naming the key and the file, so the terminal never starts
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
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

CAMERA_BACKENDS = ("replay", "opencv", "picamera2")
LED_BACKENDS = ("mock", "gpio")
PROCESSORS = ("sandbox",)
DETECTOR_MODELS = ("short", "full")
TERMINAL_MODES = ("normal", "card_only", "enrolment", "training", "out_of_service")


@dataclass(frozen=True)
class CameraConfig:
    backend: str = "replay"
    device: int = 0
    width: int = 640
    height: int = 480
    fps: float = 10.0
    # replay backend: a folder of images or a video file; empty means the demo faces.
    replay_path: str = ""
    loop: bool = True


@dataclass(frozen=True)
class DetectorConfig:
    model: str = "short"
    min_confidence: float = 0.75
    min_eye_distance_px: float = 28.0
    max_yaw: float = 0.35
    max_roll_deg: float = 25.0
    min_sharpness: float = 15.0
    min_brightness: float = 50.0
    max_brightness: float = 215.0


@dataclass(frozen=True)
class MatchConfig:
    threshold: float = 0.55
    margin: float = 0.06
    # Consent asks for the phone digits when the margin is below this...
    stepup_margin: float = 0.15
    # ...or when an unenrolled face would match somebody in the gallery with
    # more than this probability: 1 - (1 - f) ** N.
    stepup_false_match_bound: float = 0.001
    # f: the false-match probability of one comparison at the threshold:
    # the 95% upper bound measured on the photos we have (docs/privacy.md).
    false_match_rate: float = 0.033
    enrol_captures: int = 3
    scan_timeout_s: float = 15.0


@dataclass(frozen=True)
class ReaderConfig:
    # A pyserial URL: "loop://", a pty path, "/dev/serial/by-id/...".
    # "sim" starts the PN532 simulator on a pseudo-terminal (the demo).
    port: str = "sim"
    baudrate: int = 115200
    poll_interval_s: float = 0.15
    timeout_s: float = 0.5


@dataclass(frozen=True)
class LedConfig:
    backend: str = "mock"
    privacy: int = 17
    consent: int = 27
    approved: int = 22
    declined: int = 23
    fault: int = 24


@dataclass(frozen=True)
class PaymentConfig:
    processor: str = "sandbox"
    currency: str = "EUR"
    merchant: str = "Demo Corner Shop"
    consent_timeout_s: float = 20.0


@dataclass(frozen=True)
class StaffConfig:
    # scrypt hash from `facepay staff-pin`; empty means the demo PIN 2580.
    pin_hash: str = ""


@dataclass(frozen=True)
class RetentionConfig:
    template_days: int = 1095


@dataclass(frozen=True)
class LivenessConfig:
    # The head-turn challenge before any face match or enrolment capture (docs/privacy.md).
    # false only for the demo or tests; recorded in the consent ledger at start when false.
    required: bool = True
    min_yaw_deg: float = 15.0      # the turn asked for, in degrees of head yaw
    planarity_min: float = 0.055   # the nose off the plane of the face, in eye distances (docs/privacy.md)
    timeout_s: float = 4.0         # from the first face seen to the turn


@dataclass(frozen=True)
class Config:
    terminal_id: str = "demo-terminal"
    face_pay: bool = True
    mode: str = "normal"
    data_dir: str = ""
    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    leds: LedConfig = field(default_factory=LedConfig)
    payment: PaymentConfig = field(default_factory=PaymentConfig)
    staff: StaffConfig = field(default_factory=StaffConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    source: str = "<built-in defaults>"


_CHOICES = {
    "camera.backend": CAMERA_BACKENDS,
    "leds.backend": LED_BACKENDS,
    "payment.processor": PROCESSORS,
    "detector.model": DETECTOR_MODELS,
    "mode": TERMINAL_MODES,
}


def _check_value(value, typ, key: str, source: str):
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, not {value!r}", source)
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be a whole number, not {value!r}", source)
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}' must be a number, not {value!r}", source)
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, not {value!r}", source)
        return value
    raise AssertionError(f"unsupported config type {typ}")  # pragma: no cover


def _build(cls, table: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    for key in table:
        if key not in known:
            full = f"{prefix}{key}"
            raise ConfigError(
                f"unknown key '{full}'", source,
                "check its spelling against the README's configuration section",
            )
    values = {}
    for name in known:
        if name not in table:
            continue
        full = f"{prefix}{name}"
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            if not isinstance(table[name], dict):
                raise ConfigError(f"'{full}' must be a table ([{full}])", source)
            values[name] = _build(typ, table[name], f"{full}.", source)
        else:
            value = _check_value(table[name], typ, full, source)
            choices = _CHOICES.get(full)
            if choices and value not in choices:
                raise ConfigError(
                    f"'{full}' must be one of {', '.join(choices)}, not {value!r}", source
                )
            values[name] = value
    return cls(**values)


def _validate(cfg: Config) -> None:
    src = cfg.source
    if not cfg.terminal_id.strip():
        raise ConfigError("'terminal_id' must not be empty", src)
    positive = {
        "camera.width": cfg.camera.width, "camera.height": cfg.camera.height,
        "camera.fps": cfg.camera.fps, "reader.baudrate": cfg.reader.baudrate,
        "match.threshold": cfg.match.threshold,
        "payment.consent_timeout_s": cfg.payment.consent_timeout_s,
        "match.scan_timeout_s": cfg.match.scan_timeout_s,
        "retention.template_days": cfg.retention.template_days,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"'{key}' must be greater than 0, not {value!r}", src)
    if cfg.match.enrol_captures < 3:
        raise ConfigError("'match.enrol_captures' must be at least 3", src)
    if not (0 < cfg.match.false_match_rate < 1):
        raise ConfigError("'match.false_match_rate' must be between 0 and 1", src)
    if len(cfg.payment.currency) != 3 or not cfg.payment.currency.isalpha():
        raise ConfigError(
            f"'payment.currency' must be a 3-letter ISO 4217 code, not {cfg.payment.currency!r}", src
        )
    ranges = {  # (low, high) inclusive: outside them the check is either no check or impossible
        "liveness.min_yaw_deg": (cfg.liveness.min_yaw_deg, 8.0, 40.0),
        "liveness.planarity_min": (cfg.liveness.planarity_min, 0.005, 0.5),
        "liveness.timeout_s": (cfg.liveness.timeout_s, 1.0, 30.0),
    }
    for key, (value, low, high) in ranges.items():
        if not low <= value <= high:
            raise ConfigError(f"'{key}' must be between {low:g} and {high:g}, not {value!r}", src)
    pins = [cfg.leds.privacy, cfg.leds.consent, cfg.leds.approved, cfg.leds.declined, cfg.leds.fault]
    if len(set(pins)) != len(pins):
        raise ConfigError("the LED pins in [leds] must all be different", src)
    for pin in pins:
        if not 0 <= pin <= 27:
            raise ConfigError(f"LED pin {pin} is not a Raspberry Pi GPIO number (0-27)", src)


def parse_config(text: str, source: str) -> Config:
    """Parse TOML text into a :class:`Config`; ``source`` names the file in errors."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source, "fix the syntax at that line") from None
    cfg = _build(Config, table, "", source)
    cfg = dataclasses.replace(cfg, source=source)
    _validate(cfg)
    return cfg


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load ``path``, else ``$FACEPAY_CONFIG``, else the built-in defaults."""
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
    return parse_config(text, str(p))


def to_toml(cfg: Config) -> str:
    """Render a config as TOML (used by `facepay flash` and `facepay config`)."""

    def scalar(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(v)

    lines, tables = [], []
    for f in dataclasses.fields(cfg):
        if f.name == "source":
            continue
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            tables.append((f.name, v))
        else:
            lines.append(f"{f.name} = {scalar(v)}")
    for name, sub in tables:
        lines.append(f"\n[{name}]")
        for g in dataclasses.fields(sub):
            lines.append(f"{g.name} = {scalar(getattr(sub, g.name))}")
    return "\n".join(lines) + "\n"
