"""The accessible, multilingual kiosk (issue 21): contrast from the kv colours, complete catalogues, amounts
per locale, speech rendered by espeak-ng and measured with sox, the headphone jack, and kiosk scenarios
(keypad only, German, the defects) under Xvfb."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from terminal import consent, i18n
from terminal.config import AccessibilityConfig, parse_config
from terminal.speech import CUES, EspeakSpeaker, HeadphoneJack, SilentSpeaker, make_speaker, tone_wav
from terminal.ui import theme

KV = sorted((ROOT / "assets" / "kv").glob("*.kv"))
A11Y_SCENARIOS = sorted((ROOT / "tests" / "scenarios" / "a11y").glob("*.toml"))


# -- contrast and size ---------------------------------------------------------------------------
def test_contrast_formula_matches_wcag_examples():
    black, white = (0, 0, 0, 1), (1, 1, 1, 1)
    assert theme.contrast(black, white) == pytest.approx(21.0)
    assert theme.contrast(white, white) == pytest.approx(1.0)
    assert theme.contrast((0.4627, 0.4627, 0.4627, 1), white) == pytest.approx(4.54, abs=0.02)   # #767676


@pytest.mark.parametrize("palette", list(theme.PALETTES.values()), ids=lambda p: p.name)
def test_every_text_and_button_pair_is_at_least_4_5_to_1(palette):
    low = []
    for fg in theme.TEXTS:
        for bg in theme.SURFACES:
            r = theme.contrast(getattr(palette, fg), getattr(palette, bg))
            if r < 4.5:
                low.append(f"{fg} on {bg}: {r:.2f}")
    for bg, fg in theme.BUTTONS:
        r = theme.contrast(getattr(palette, fg), getattr(palette, bg))
        if r < 4.5:
            low.append(f"{fg} on {bg}: {r:.2f}")
    for bg in theme.SURFACES:   # the focus ring is a non-text indicator: 3:1 (WCAG 1.4.11)
        r = theme.contrast(palette.focus, getattr(palette, bg))
        if r < 3.0:
            low.append(f"focus on {bg}: {r:.2f}")
    assert not low, low


def test_kv_colours_all_come_from_the_palette():
    """No kv file holds a colour of its own: every colour is a role the contrast test has checked."""
    colour_line = re.compile(r"^\s*(color|rgba|background_color|disabled_color)\s*:(.*)$")
    four = re.compile(r"\(?\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*\)?")
    # allowed: nothing drawn (0, 0, 0, 0) and the camera picture's texture drawn as it is (1, 1, 1, 1)
    allowed = {("0", "0", "0", "0"), ("1", "1", "1", "1")}
    used = set()
    for kv in KV:
        for n, line in enumerate(kv.read_text().splitlines(), 1):
            m = colour_line.match(line)
            if m and any(t not in allowed for t in four.findall(m.group(2))):
                pytest.fail(f"{kv.name}:{n}: a colour number instead of a palette role: {line.strip()}")
            used |= set(re.findall(r"app\.th\.(\w+)", line))
    assert used and used <= set(theme.ROLES), used - set(theme.ROLES)
    # and every text role the contrast test checks is one the kv files actually use
    assert set(theme.TEXTS) <= used


# -- languages -------------------------------------------------------------------------------------
@pytest.mark.parametrize("lang", [c for c in i18n.LANGUAGES if c != i18n.SOURCE])
def test_catalogue_is_complete(lang):
    from babel.messages.pofile import read_po

    with open(i18n.po_path(lang), "rb") as f:
        cat = read_po(f)
    have = {m.id: m for m in cat if m.id}
    missing = [m for m in i18n.msgids() if m not in have or not have[m].string]
    assert not missing, f"{lang}: {len(missing)} untranslated, e.g. {missing[:3]}"
    fuzzy = [m.id for m in have.values() if m.fuzzy]
    assert not fuzzy, fuzzy
    wrong = [m.id for m in have.values() if i18n.fields(m.string) != i18n.fields(m.id)]
    assert not wrong, f"{lang}: placeholders differ in {wrong}"


def test_template_lists_what_the_code_marks():
    from babel.messages.pofile import read_po

    with open(i18n.LOCALE_DIR / "facepay.pot", "rb") as f:
        pot = [m.id for m in read_po(f) if m.id]
    assert set(pot) == set(i18n.msgids())


def test_every_failed_head_turn_has_its_own_words_on_the_enrolment_screen():
    """Each reason the head-turn check gives (terminal/face/liveness.py REASONS) is said in its own words, in every
    language, never as the general "could not be saved"."""
    code = ("import json; from terminal.face.liveness import REASONS; from terminal import i18n; "
            "from terminal.ui.controller import ENROL_FAILED_OTHER, enrol_failure\n"
            "out = {}\n"
            "for lang in i18n.LANGUAGES:\n"
            "    i18n.activate(lang)\n"
            "    other = i18n._(ENROL_FAILED_OTHER[0])\n"
            "    out[lang] = {r: enrol_failure(f'liveness:{r}:left')[0] != other for r in REASONS if r != 'live'}\n"
            "print(json.dumps(out))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "KIVY_NO_ARGS": "1", "KIVY_NO_CONSOLELOG": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    words = json.loads(r.stdout.strip().splitlines()[-1])
    assert words.keys() == set(i18n.LANGUAGES)
    unsaid = {lang: [k for k, ok in w.items() if not ok] for lang, w in words.items() if not all(w.values())}
    assert not unsaid and "too_slow" in words["en"] and "cut" in words["en"], unsaid


def test_translations_are_used():
    assert i18n._("Amount due", "de") == "Zu zahlen"
    assert i18n._("Paid {amount}", "fr", amount="x") == "x payé"
    assert i18n._("Cancel", "zh") == "取消"
    with pytest.raises(ValueError, match="unknown language"):
        i18n.activate("xx")


def test_amounts_per_locale():
    nbsp = "\u00a0"
    assert i18n.amount(420, "EUR", "en") == "€4.20"
    assert i18n.amount(420, "EUR", "de") == f"4,20{nbsp}€"
    assert i18n.amount(420, "EUR", "es") == f"4,20{nbsp}€"
    assert i18n.amount(123456, "EUR", "fr").startswith("1\u202f234,56")
    assert i18n.amount(500, "JPY", "en") == "JP¥500"   # CLDR en_GB: the yen is told from the yuan
    assert i18n.amount(420, "EUR", "zh") == "€4.20"


def test_every_language_has_its_own_versioned_consent_text():
    versions = set()
    for lang in i18n.LANGUAGES:
        text = consent.load(lang)
        assert lang in text.version and text.body.startswith("# ")
        versions.add(text.version)
    assert len(versions) == len(i18n.LANGUAGES)
    assert set(consent.LANGUAGES) == set(i18n.LANGUAGES)


# -- speech -------------------------------------------------------------------------------------
def _sox_stat(wav: Path) -> dict:
    if shutil.which("sox") is None:
        pytest.fail("sox is not installed (the README's apt line): the speech cannot be measured")
    r = subprocess.run(["sox", str(wav), "-n", "stat"], capture_output=True, text=True, check=True)
    out = {}
    for line in r.stderr.splitlines():
        key, _, value = line.partition(":")
        try:
            out[key.strip()] = float(value.split()[0])
        except (ValueError, IndexError):
            pass
    return out


LINES = {
    "en": "Amount due: €4.20. To pay by card, tap your card on the reader below the screen.",
    "de": i18n._("Slowly turn your head to your left", "de"),
    "fr": i18n._("Confirm your payment of {amount} to {merchant}, for {name}, card {card}.", "fr",
                 amount=i18n.amount(420, "EUR", "fr"), merchant="Demo", name="Ana N.", card="•••• B2C3"),
    "es": i18n._("Paid {amount}", "es", amount=i18n.amount(420, "EUR", "es")),
    "zh": i18n._("We could not find you. Pay by card, or try again.", "zh"),
}


@pytest.mark.parametrize("lang", list(LINES))
def test_espeak_renders_each_language_audibly_and_at_a_plausible_length(tmp_path, lang):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (deploy/install.sh and the README's apt line install it)")
    line = LINES[lang]
    wav = EspeakSpeaker(speed=150, volume=100).render(line, lang, tmp_path / "line.wav")
    st = _sox_stat(wav)
    seconds, rms = st["Length (seconds)"], st["RMS     amplitude"]
    words = len(line.split()) if lang != "zh" else len(line) / 2
    # 150 words a minute: 0.4 s a word, give or take pauses and the voice's own pace
    assert 0.15 * words < seconds < 1.2 * words + 1.5, (seconds, words)
    assert rms > 0.02, f"{lang}: almost silent (RMS {rms})"
    faster = EspeakSpeaker(speed=300, volume=100).render(line, lang, tmp_path / "fast.wav")
    assert _sox_stat(faster)["Length (seconds)"] < seconds * 0.8   # [accessibility] speed is honoured
    quiet = EspeakSpeaker(speed=150, volume=30).render(line, lang, tmp_path / "quiet.wav")
    assert _sox_stat(quiet)["RMS     amplitude"] < rms * 0.6         # and volume


def test_cues_are_distinct_audible_tones(tmp_path):
    stats = {}
    for name in CUES:
        wav = tmp_path / f"{name}.wav"
        wav.write_bytes(tone_wav(name))
        stats[name] = _sox_stat(wav)
        assert stats[name]["RMS     amplitude"] > 0.05, name
        expected = sum(d for _, d in CUES[name])
        assert stats[name]["Length (seconds)"] == pytest.approx(expected, abs=0.01)
    # different pitch or rhythm for each: no two cues share their notes
    assert len({tuple(CUES[n]) for n in CUES}) == len(CUES)
    assert stats["failure"]["Rough   frequency"] < stats["success"]["Rough   frequency"]


def test_speaker_backend_chosen_by_config():
    cfg = parse_config('terminal_id = "t1"\n[accessibility]\nspeech = "silent"\nspeed = 200\nvolume = 80\n', "t.toml")
    sp = make_speaker(cfg.accessibility)
    assert isinstance(sp, SilentSpeaker) and (sp.speed, sp.volume) == (200, 80)
    sp.say("Zu zahlen", "de")
    sp.cue("success")
    assert sp.log == [("say", "Zu zahlen", "de"), ("cue", "success", "")]
    with pytest.raises(ValueError, match="unknown cue"):
        sp.cue("fanfare")
    assert isinstance(make_speaker(AccessibilityConfig()), EspeakSpeaker)
    from terminal.errors import ConfigError

    with pytest.raises(ConfigError, match="accessibility.speech"):
        parse_config('terminal_id = "t1"\n[accessibility]\nspeech = "piper"\n', "t.toml")


def test_headphone_jack_through_gpiozero_mockfactory():
    from gpiozero.pins.mock import MockFactory

    seen = []
    jack = HeadphoneJack(5, seen.append, pin_factory=MockFactory())
    try:
        assert not jack.inserted
        jack.button.pin.drive_low()      # the plug closes the switch contact to ground
        assert jack.inserted and seen == [True]
        jack.button.pin.drive_high()
        assert not jack.inserted and seen == [True, False]
    finally:
        jack.close()


# -- the kiosk under Xvfb -------------------------------------------------------------------------------
@pytest.mark.ui
@pytest.mark.parametrize("scenario", A11Y_SCENARIOS, ids=lambda p: p.stem)
def test_a11y_scenario(tmp_path, scenario):
    from test_ui import assert_not_blank, env, kiosk_cmd

    conf = tmp_path / "terminal.toml"
    # speech logged, not played (no sound card under Xvfb); a simulated jack on a MockFactory pin
    # and GPIO push buttons on MockFactory pins (a second keypad)
    conf.write_text('[accessibility]\nspeech = "silent"\nheadphone_gpio = 5\nbutton_prev_gpio = 6\n'
                    'button_next_gpio = 13\nbutton_enter_gpio = 19\nbutton_back_gpio = 26\n'
                    'button_more_time_gpio = 16\n')
    shots = tmp_path / "shots"
    r = subprocess.run(kiosk_cmd("--config", conf, "--data-dir", tmp_path / "data", "run", "--demo",
                                 "--script", scenario, "--screenshots", shots),
                       capture_output=True, text=True, timeout=300, env=env(), cwd=ROOT)
    result = json.loads((shots / "result.json").read_text()) if (shots / "result.json").exists() else None
    assert r.returncode == 0 and result and result["passed"], ((result or {}).get("failures"), r.stdout[-3000:],
                                                             r.stderr[-3000:])
    for png in sorted(shots.glob("*.png")):
        assert_not_blank(png, (800, 480))
    if result["spoken"]:
        # what the shopper heard, rendered by the real voice: the longest line is audible and not cut short
        lang = "de" if "german" in scenario.stem else "en"
        line = max(result["spoken"], key=len)
        wav = EspeakSpeaker().render(line, lang, tmp_path / "heard.wav")
        st = _sox_stat(wav)
        assert st["RMS     amplitude"] > 0.02 and st["Length (seconds)"] > 0.15 * len(line.split())


# -- GPIO buttons and the head turn's More time ----------------------------------------------------------
def test_gpio_buttons_config_is_checked():
    from terminal.errors import ConfigError

    base = 'terminal_id = "t1"\n[accessibility]\n'
    cfg = parse_config(base + "button_next_gpio = 13\nbutton_enter_gpio = 19\n", "t.toml")
    from terminal.buttons import pins_of

    assert pins_of(cfg.accessibility) == {"next": 13, "enter": 19}
    with pytest.raises(ConfigError, match="both GPIO 13"):
        parse_config(base + "button_next_gpio = 13\nbutton_enter_gpio = 13\n", "t.toml")
    with pytest.raises(ConfigError, match="both GPIO 5"):
        parse_config(base + "headphone_gpio = 5\nbutton_next_gpio = 5\nbutton_enter_gpio = 19\n", "t.toml")
    with pytest.raises(ConfigError, match="the pin of 'leds.privacy'"):
        parse_config(base + "button_next_gpio = 17\nbutton_enter_gpio = 19\n", "t.toml")
    with pytest.raises(ConfigError, match="need at least"):
        parse_config(base + "button_back_gpio = 26\n", "t.toml")
    with pytest.raises(ConfigError, match="button_enter_gpio"):
        parse_config(base + "button_next_gpio = 13\nbutton_enter_gpio = 28\n", "t.toml")


def test_gpio_buttons_through_gpiozero_mockfactory():
    from gpiozero.pins.mock import MockFactory

    from terminal.buttons import GpioButtons

    seen = []
    b = GpioButtons({"next": 13, "enter": 19, "more_time": 16}, seen.append, pin_factory=MockFactory())
    try:
        for name in ("next", "next", "enter", "more_time"):
            pin = b.buttons[name].pin
            pin.drive_low()      # the button closes the contact to ground
            pin.drive_high()
        assert seen == ["next", "next", "enter", "more_time"]
    finally:
        b.close()
    with pytest.raises(ValueError, match="unknown button"):
        GpioButtons({"jump": 5}, seen.append, pin_factory=MockFactory())


def test_more_time_lengthens_the_head_turn_window_at_most_three_times():
    from terminal import checkout as co

    m = co.CheckoutMachine(co.Policy(liveness_required=True), face_pay=True)
    m.handle(co.StartSale("s1", 420, "EUR"))
    with pytest.raises(co.Rejected):
        m.handle(co.MoreTime())            # no head turn asked on the pay screen
    m.handle(co.ChooseFace("left"))
    assert m.view().challenge in ("left", "right") and m.view().challenge_more == 0
    for n in (1, 2, 3):
        m.handle(co.MoreTime())
        assert m.view().challenge_more == n
    with pytest.raises(co.Rejected, match="no more time"):
        m.handle(co.MoreTime())
    m.handle(co.LivenessPassed())
    with pytest.raises(co.Rejected, match="no head turn"):
        m.handle(co.MoreTime())            # the turn was seen: nothing to lengthen
