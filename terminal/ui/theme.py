"""The kiosk's colours: every colour a kv file uses is a role of one of these two palettes.

kv files name roles (``color: app.th.error``, ``background_color: app.th.go``); they hold no
colour numbers of their own (tests/test_a11y.py checks both that and the contrast of every pair
below, computed with the WCAG 2.x formula).  ``HIGH_CONTRAST`` is the high-contrast large-text
mode's palette: light text on black, black text on bright buttons.

No Kivy here: the contrast test imports this module without a display.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

RGBA = tuple[float, float, float, float]


@dataclass(frozen=True)
class Palette:
    name: str
    # surfaces (behind text)
    bg: RGBA
    strip_bg: RGBA
    ok_bg: RGBA
    bad_bg: RGBA
    warn_bg: RGBA
    neutral_bg: RGBA
    tray_bg: RGBA
    # text on any surface
    text: RGBA
    muted: RGBA
    error: RGBA
    warn: RGBA
    ok: RGBA
    accent: RGBA
    camera: RGBA
    # buttons: background, pressed background, label
    btn: RGBA
    btn_down: RGBA
    btn_text: RGBA
    quiet: RGBA
    quiet_down: RGBA
    quiet_text: RGBA
    danger: RGBA
    danger_down: RGBA
    danger_text: RGBA
    go: RGBA
    go_down: RGBA
    go_text: RGBA
    off: RGBA            # a disabled button, and an unselected mode button
    off_text: RGBA
    # non-text: the keyboard focus ring (>= 3:1 against every surface), the camera's picture
    focus: RGBA
    preview_bg: RGBA
    face_ok: RGBA
    face_warn: RGBA


def _c(hexcode: str) -> RGBA:
    h = hexcode.lstrip("#")
    return (int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255, 1.0)


NORMAL = Palette(
    name="normal",
    bg=_c("#FFFFFF"), strip_bg=_c("#EDF2FA"), ok_bg=_c("#E0F7E6"), bad_bg=_c("#FCE6E6"), warn_bg=_c("#FFF0C7"),
    neutral_bg=_c("#F2F2F5"), tray_bg=_c("#FAF0D1"),
    text=_c("#1F2129"), muted=_c("#50535C"), error=_c("#A81E1E"), warn=_c("#8A4A00"), ok=_c("#0B6630"),
    accent=_c("#124CA8"), camera=_c("#B30B0B"),
    btn=_c("#1A5CBF"), btn_down=_c("#0F3D85"), btn_text=_c("#FFFFFF"),
    quiet=_c("#E0E3EB"), quiet_down=_c("#BFC4D1"), quiet_text=_c("#1F2129"),
    danger=_c("#B82424"), danger_down=_c("#801414"), danger_text=_c("#FFFFFF"),
    go=_c("#137336"), go_down=_c("#0B5226"), go_text=_c("#FFFFFF"),
    off=_c("#D6D9DE"), off_text=_c("#3D4047"),
    focus=_c("#000000"), preview_bg=_c("#0D0D12"), face_ok=_c("#33E666"), face_warn=_c("#FFBF1A"),
)

HIGH_CONTRAST = Palette(
    name="high_contrast",
    bg=_c("#000000"), strip_bg=_c("#141414"), ok_bg=_c("#00240A"), bad_bg=_c("#330000"), warn_bg=_c("#2B1F00"),
    neutral_bg=_c("#0F0F0F"), tray_bg=_c("#241C00"),
    text=_c("#FFFFFF"), muted=_c("#D9D9D9"), error=_c("#FF9999"), warn=_c("#FFD966"), ok=_c("#80FF99"),
    accent=_c("#8CCCFF"), camera=_c("#FF8080"),
    btn=_c("#FFFF00"), btn_down=_c("#CCCC00"), btn_text=_c("#000000"),
    quiet=_c("#FFFFFF"), quiet_down=_c("#BFBFBF"), quiet_text=_c("#000000"),
    danger=_c("#FF9999"), danger_down=_c("#E06666"), danger_text=_c("#000000"),
    go=_c("#80FF99"), go_down=_c("#4DCC66"), go_text=_c("#000000"),
    off=_c("#4D4D4D"), off_text=_c("#FFFFFF"),
    focus=_c("#00E5FF"), preview_bg=_c("#000000"), face_ok=_c("#33E666"), face_warn=_c("#FFBF1A"),
)

PALETTES = {p.name: p for p in (NORMAL, HIGH_CONTRAST)}
SURFACES = ("bg", "strip_bg", "ok_bg", "bad_bg", "warn_bg", "neutral_bg", "tray_bg")
TEXTS = ("text", "muted", "error", "warn", "ok", "accent", "camera")
# (background, label) of every button state
BUTTONS = (("btn", "btn_text"), ("btn_down", "btn_text"), ("quiet", "quiet_text"), ("quiet_down", "quiet_text"),
           ("danger", "danger_text"), ("danger_down", "danger_text"), ("go", "go_text"), ("go_down", "go_text"),
           ("off", "off_text"))
ROLES = tuple(f.name for f in fields(Palette) if f.name != "name")
# the high-contrast large-text mode's text size, against the normal one
LARGE_TEXT = 1.3


def luminance(c: RGBA) -> float:
    """WCAG 2.x relative luminance of an sRGB colour."""
    def lin(v: float) -> float:
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(v) for v in c[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: RGBA, b: RGBA) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)
