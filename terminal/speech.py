"""Speech and audio cues for the kiosk: one small interface, a real espeak-ng backend and a silent one.

``[accessibility] speech`` picks the backend:

- ``"espeak-ng"``: the Debian package's voices (no download at run time), played on the default
  ALSA device (the headphone jack).  Cues are short tones made here and played with sox's ``play``.
- ``"silent"``: nothing is played; every line and cue is kept in :attr:`Speaker.log` (tests, and
  terminals without audio).

Speech starts when headphones go into the jack (``[accessibility] headphone_gpio``, a switch
contact read through gpiozero), or by a long press anywhere on the screen, or the keypad's ``*``.

    sp = make_speaker(cfg.accessibility)
    sp.say("Amount due: €4.20", "en")
    sp.cue("success")
    EspeakSpeaker(150, 100).render("Zu zahlen: 4,20 €", "de", Path("line.wav"))
"""

from __future__ import annotations

import io
import logging
import math
import shutil
import struct
import subprocess
import threading
import wave
from pathlib import Path

_log = logging.getLogger(__name__)

RATE = 22050
# cue -> (frequency Hz, duration s) notes: distinct in pitch and rhythm
CUES = {
    "scan_start": [(660, 0.12), (880, 0.12)],             # rising pair: the camera is on
    "success": [(784, 0.12), (988, 0.12), (1319, 0.22)],  # rising triad
    "failure": [(330, 0.25), (247, 0.35)],                # falling, low
    "tick": [(1000, 0.06)],                               # each of the countdown's last seconds
    "warning": [(880, 0.15), (0, 0.08), (880, 0.15)],     # time is nearly up: "More time?"
}


def voice(lang: str) -> str:
    from .i18n import voice_of

    return voice_of(lang)


def tone_wav(cue: str, volume: int = 100) -> bytes:
    """A cue as WAV bytes (16-bit mono): sine notes with 10 ms fades, 0 Hz = a pause."""
    notes = CUES[cue]
    amp = 0.5 * min(200, max(0, volume)) / 100 * 32767 / 2
    frames = bytearray()
    for freq, dur in notes:
        n = int(RATE * dur)
        fade = int(RATE * 0.01)
        for i in range(n):
            env = min(1.0, i / fade, (n - i) / fade) if fade else 1.0
            v = amp * env * math.sin(2 * math.pi * freq * i / RATE) if freq else 0.0
            frames += struct.pack("<h", int(v))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(frames))
    return buf.getvalue()


class Speaker:
    """The interface: say a line, play a cue, stop what is playing.  Every call is kept in ``log``."""

    def __init__(self, speed: int = 150, volume: int = 100):
        self.speed, self.volume = speed, volume
        self.log: list[tuple[str, str, str]] = []   # (kind "say"/"cue", text or cue name, language)

    def say(self, text: str, lang: str) -> None:
        if text.strip():
            self.log.append(("say", text, lang))
            self._say(text, lang)

    def cue(self, name: str) -> None:
        if name not in CUES:
            raise ValueError(f"unknown cue {name!r}: one of {', '.join(CUES)}")
        self.log.append(("cue", name, ""))
        self._cue(name)

    def log_lines(self) -> list[str]:
        return [text for kind, text, _ in self.log if kind == "say"]

    def cues(self) -> list[str]:
        return [name for kind, name, _ in self.log if kind == "cue"]

    def stop(self) -> None:
        pass

    def close(self) -> None:
        self.stop()

    def _say(self, text: str, lang: str) -> None:
        pass

    def _cue(self, name: str) -> None:
        pass


class SilentSpeaker(Speaker):
    """Plays nothing; ``log`` holds what would have been said (tests, terminals without audio)."""


class EspeakSpeaker(Speaker):
    """espeak-ng, one process per line; a new line interrupts the one still speaking."""

    def __init__(self, speed: int = 150, volume: int = 100):
        super().__init__(speed, volume)
        self.exe = shutil.which("espeak-ng")
        self.player = shutil.which("play")
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._warned = False
        if self.exe is None:
            _log.warning("espeak-ng is not installed (apt-get install espeak-ng): the kiosk cannot speak")

    def command(self, text: str, lang: str, wav: Path | None = None) -> list[str]:
        cmd = [self.exe or "espeak-ng", "-v", voice(lang), "-s", str(self.speed), "-a", str(self.volume)]
        if wav is not None:
            cmd += ["-w", str(wav)]
        return cmd + ["--", text]

    def render(self, text: str, lang: str, wav: Path) -> Path:
        """Speak ``text`` into a WAV file instead of the speaker (what tests measure)."""
        if self.exe is None:
            raise FileNotFoundError("espeak-ng is not installed: apt-get install espeak-ng")
        subprocess.run(self.command(text, lang, wav), check=True, capture_output=True, timeout=60)
        return wav

    def _spawn(self, cmd: list[str], stdin: bytes | None = None) -> None:
        with self._lock:
            self._stop_locked()
            try:
                self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if stdin is not None:
                    threading.Thread(target=self._feed, args=(self._proc, stdin), daemon=True).start()
            except OSError as exc:
                if not self._warned:
                    _log.warning("cannot play audio: %s", exc)
                    self._warned = True

    @staticmethod
    def _feed(proc: subprocess.Popen, data: bytes) -> None:
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except OSError:
            pass

    def _say(self, text: str, lang: str) -> None:
        if self.exe is not None:
            self._spawn(self.command(text, lang))

    def _cue(self, name: str) -> None:
        if self.player is not None:
            self._spawn([self.player, "-q", "-t", "wav", "-"], tone_wav(name, self.volume))

    def _stop_locked(self) -> None:
        p, self._proc = self._proc, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(1)
            except subprocess.TimeoutExpired:
                p.kill()

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()


def make_speaker(cfg) -> Speaker:
    """The backend ``[accessibility] speech`` names."""
    if cfg.speech == "silent":
        return SilentSpeaker(cfg.speed, cfg.volume)
    return EspeakSpeaker(cfg.speed, cfg.volume)


class HeadphoneJack:
    """The jack's switch contact on a GPIO input (gpiozero): ``inserted`` is True with a plug in.

    ``pin_factory``: gpiozero's MockFactory in the demo and the tests (drive the pin to plug in).
    """

    def __init__(self, pin: int, on_change, pin_factory=None):
        from gpiozero import Button

        self.button = Button(pin, pull_up=True, pin_factory=pin_factory)   # the plug closes the contact to ground
        self.button.when_pressed = lambda: on_change(True)
        self.button.when_released = lambda: on_change(False)

    @property
    def inserted(self) -> bool:
        return bool(self.button.is_pressed)

    def close(self) -> None:
        self.button.close()
