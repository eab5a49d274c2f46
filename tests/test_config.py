import json
import math
import tomllib

import pytest

from terminal.config import Config, load_config, parse_config, to_toml
from terminal.errors import ConfigError
from terminal.hardware import demo_config
from terminal.money import parse_amount

SIMULATORS = '[camera]\nbackend = "replay"\n[reader]\nport = "sim"\n[leds]\nbackend = "mock"\n'


def test_defaults_are_the_real_hardware(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('terminal_id = "shop-1"\n')
    for cfg in (load_config(None), load_config(p)):
        assert cfg.camera.backend == "picamera2" and cfg.reader.port == "/dev/serial0" and cfg.leds.backend == "gpio"
        assert cfg.staff.pin_hash == ""
    demo = demo_config(load_config(p))  # `run --demo`
    assert demo.camera.backend == "replay" and demo.reader.port == "sim" and demo.leds.backend == "mock"


def test_simulators_only_when_the_config_names_them(tmp_path):
    cfg = parse_config('terminal_id = "lab"\n' + SIMULATORS, "lab.toml")
    assert cfg.camera.backend == "replay" and cfg.reader.port == "sim" and cfg.leds.backend == "mock"


def test_file_with_only_terminal_id_is_valid(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('terminal_id = "shop-1"\n')
    cfg = load_config(p)
    assert cfg.terminal_id == "shop-1"
    assert cfg.match == Config().match


def test_env_var_names_the_file(tmp_path, monkeypatch):
    p = tmp_path / "t.toml"
    p.write_text('terminal_id = "from-env"\n[camera]\nwidth = 800\n')
    monkeypatch.setenv("FACEPAY_CONFIG", str(p))
    cfg = load_config(None)
    assert cfg.terminal_id == "from-env" and cfg.camera.width == 800 and cfg.camera.height == 480


@pytest.mark.parametrize("text, words", [
    ('terminal_id = "x"\ncolour = "red"\n', "unknown key 'colour'"),
    ('terminal_id = "x"\n[camera]\nwidht = 3\n', "unknown key 'camera.widht'"),
    ('terminal_id = "x"\n[camera]\nwidth = "wide"\n', "'camera.width' must be a whole number"),
    ('terminal_id = "x"\nface_pay = "yes"\n', "'face_pay' must be true or false"),
    ('terminal_id = "x"\n[camera]\nbackend = "webcam"\n', "'camera.backend' must be 'picamera2', 'opencv' or 'replay'"),
    ('terminal_id = "x"\ncamera = 3\n', "'camera' must be a table"),
    ('terminal_id = "x"\n[leds]\nprivacy = 27\n', "LED pins in [leds] must all be different"),
    ('terminal_id = "x"\n[payment]\ncurrency = "EURO"\n', "'payment.currency' must be an ISO 4217 currency code"),
    ('terminal_id = ""\n', "'terminal_id' must not be empty"),
    ('terminal_id = "x"\n[match]\nthreshold = -1\n', "'match.threshold' must be greater than"),
    ('terminal_id = "x\n', "not valid TOML"),
])
def test_bad_config_names_key_and_file(text, words):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "/etc/facepay/terminal.toml")
    assert words in str(err.value)
    assert "/etc/facepay/terminal.toml" in str(err.value)


@pytest.mark.parametrize("text, words", [
    ("[detector]\nmin_confidence = 7.0", "'detector.min_confidence' must be less than or equal to 1, not 7.0"),
    ("[detector]\nmin_confidence = -0.1", "'detector.min_confidence' must be greater than or equal to 0"),
    ("[match]\nmargin = -1", "'match.margin' must be greater than or equal to 0, not -1"),
    ("[reader]\ntimeout_s = -5", "'reader.timeout_s' must be greater than 0, not -5"),
    ("[reader]\ntimeout_s = 0", "'reader.timeout_s' must be greater than 0, not 0"),
    ("[camera]\nfps = nan", "'camera.fps' must be a finite number"),
    ("[camera]\nfps = inf", "'camera.fps' must be a finite number"),
    ("[camera]\nfps = 0.0", "'camera.fps' must be greater than 0"),
    ("[camera]\nwidth = 0", "'camera.width' must be greater than or equal to 64"),
    ("[camera]\nfps = true", "'camera.fps' must be a number, not True"),
    ("[camera]\nwidth = 640.5", "'camera.width' must be a whole number"),
    ("[match]\nfalse_match_rate = 1.0", "'match.false_match_rate' must be less than 1"),
    ("[match]\nstepup_false_match_bound = nan", "'match.stepup_false_match_bound' must be a finite number"),
    ("[match]\nenrol_captures = 2", "'match.enrol_captures' must be greater than or equal to 3"),
    ("[match]\nscan_timeout_s = -1", "'match.scan_timeout_s' must be greater than 0"),
    ("[payment]\nconsent_timeout_s = 1e9", "'payment.consent_timeout_s' must be less than or equal to 3600"),
    ("[reader]\npoll_interval_s = 0", "'reader.poll_interval_s' must be greater than 0"),
    ("[reader]\nbaudrate = -9600", "'reader.baudrate' must be greater than or equal to 9600"),
    ("[leds]\nfault = 40", "'leds.fault' must be less than or equal to 27"),
    ("[retention]\ntemplate_days = 0", "'retention.template_days' must be greater than or equal to 1"),
    ("[detector]\nmax_roll_deg = 400", "'detector.max_roll_deg' must be less than or equal to 90"),
    ("[detector]\nmin_brightness = 220", "'detector.min_brightness' must be below 'detector.max_brightness'"),
    ('[payment]\ncurrency = "ABC"', "'payment.currency' must be an ISO 4217 currency code in use"),
    ('[payment]\ncurrency = "XYZ"', "'payment.currency' must be an ISO 4217 currency code in use"),
    ('[payment]\ncurrency = "DEM"', "'payment.currency' must be an ISO 4217 currency code in use"),  # withdrawn 2002
    ('[payment]\ncurrency = "eur"', "in capitals"),
])
def test_every_number_has_a_range_and_currencies_are_iso_4217(text, words):
    with pytest.raises(ConfigError) as err:
        parse_config('terminal_id = "x"\n' + text + "\n", "/etc/facepay/terminal.toml")
    line = str(err.value)
    assert words in line and "/etc/facepay/terminal.toml" in line and "\n" not in line


def test_every_numeric_key_refuses_nan_and_out_of_range():
    """No numeric key is left unchecked: each refuses nan and a value a million times too large."""
    cfg = Config()
    for section in ("camera", "detector", "match", "reader", "leds", "payment", "retention"):
        for key, value in vars(getattr(cfg, section)).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            bad_values = ["nan", "1e12"] if isinstance(value, float) else ["-1000000000", "1000000000"]
            for bad in bad_values:
                with pytest.raises(ConfigError, match=f"'{section}.{key}'"):
                    parse_config(f'terminal_id = "x"\n[{section}]\n{key} = {bad}\n', "t.toml")


@pytest.mark.parametrize("currency, amount, minor", [("EUR", "12.50", 1250), ("JPY", "1200", 1200),
                                                     ("XOF", "1250", 1250), ("BHD", "1.250", 1250)])
def test_currencies_have_their_own_decimals(currency, amount, minor):
    cfg = parse_config(f'terminal_id = "x"\n[payment]\ncurrency = "{currency}"\n', "t.toml")
    assert parse_amount(amount, cfg.payment.currency) == minor


def test_xof_has_no_decimals():
    with pytest.raises(ValueError, match="XOF has none"):
        parse_amount("12.50", "XOF")


def test_cli_sale_in_xof_refuses_decimals(cli, tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('terminal_id = "dakar-1"\n[payment]\ncurrency = "XOF"\n' + SIMULATORS)
    r = cli("--config", p, "sale", "--amount", "12.50", "--card-uid", "04A1B2C3")
    assert r.returncode == 2 and "XOF has none" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("--config", p, "sales", "list", "--json")
    assert json.loads(r.stdout) == []  # nothing was half-written


def test_round_trip_through_toml():
    cfg = Config(terminal_id="a\"b")
    again = parse_config(to_toml(cfg), "x")
    assert again == Config(terminal_id='a"b', source="x")


def test_written_toml_is_always_valid():
    """Strings with newlines, tabs, control characters, quotes and backslashes are written as valid TOML."""
    import dataclasses

    cfg = Config(terminal_id="till\n1\t\"\\ \x01\x7f é", payment=dataclasses.replace(
        Config().payment, merchant="Corner\rShop\u2028"))
    text = to_toml(cfg)
    tomllib.loads(text)
    assert parse_config(text, "x") == dataclasses.replace(cfg, source="x")


def test_cli_config_prints_toml_and_json(cli, tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('terminal_id = "shop-9"\n[payment]\ncurrency = "XOF"\nmerchant = "Chez \\"Awa\\"\\nDakar"\n')
    r = cli("--config", p, "config", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["terminal_id"] == "shop-9" and data["payment"]["currency"] == "XOF"
    assert data["payment"]["merchant"] == 'Chez "Awa"\nDakar' and data["camera"]["backend"] == "picamera2"
    assert data["camera"]["fps"] == 10.0 and not math.isnan(data["match"]["threshold"])
    r = cli("--config", p, "config")
    assert r.returncode == 0
    assert tomllib.loads(r.stdout) == data  # the TOML says the same


def test_cli_out_of_range_config_exits_2_with_one_line(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('terminal_id = "x"\n[detector]\nmin_confidence = 7.0\n')
    r = cli("--config", bad, "config", "--json")
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "'detector.min_confidence'" in lines[0] and str(bad) in lines[0]


def test_run_outside_demo_needs_a_staff_pin(cli, tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('terminal_id = "shop-1"\n')
    r = cli("--config", p, "run")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no staff PIN is set" in lines[0] and "facepay staff-pin" in lines[0]
    assert str(p) in lines[0]
    assert not cli.data_dir.exists(), "nothing may be created"


def test_staff_pin_prints_valid_toml(cli):
    r = cli("staff-pin", "--pin", "4821")
    assert r.returncode == 0
    cfg = parse_config('terminal_id = "x"\n' + r.stdout, "t.toml")
    assert cfg.staff.pin_hash.startswith("scrypt$")


def test_cli_bad_config_exits_2_with_one_line(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('terminal_id = "x"\n[reader]\nbaud = 9600\n')
    r = cli("--config", bad, "shoppers", "list")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key 'reader.baud'" in lines[0] and str(bad) in lines[0]
    assert not cli.data_dir.exists(), "nothing may be created for a bad config"


def test_cli_missing_config_file(cli, tmp_path):
    r = cli("--config", tmp_path / "nope.toml", "audit", "verify")
    assert r.returncode == 2 and "config file not found" in r.stderr


@pytest.mark.parametrize("args, words", [
    ([], "required"),
    (["frobnicate"], "invalid choice"),
    (["sale", "--amount", "5"], "one of the arguments --card-uid --face --face-video is required"),
    (["sale", "--amount", "abc", "--card-uid", "04A1B2C3"], "amount 'abc' is not a number"),
    (["sale", "--amount", "1.234", "--card-uid", "04A1B2C3"], "more than 2 decimal places"),
    (["sale", "--amount", "-3", "--card-uid", "04A1B2C3"], "greater than zero"),
    (["sale", "--amount", "3", "--card-uid", "XYZ"], "not hexadecimal"),
    (["sale", "--amount", "3", "--card-uid", "0102"], "4, 7 or 10"),
    (["sale", "--amount", "3", "--card-uid", "04A1B2C"], "has an odd number of hex digits (7)"),
    (["sale", "--amount", "1e3", "--card-uid", "04A1B2C3"], "not written as a plain amount"),
    (["sale", "--amount", "nan", "--card-uid", "04A1B2C3"], "not written as a plain amount"),
    (["sale", "--amount", "inf", "--card-uid", "04A1B2C3"], "not written as a plain amount"),
    (["run", "--screenshots", "shots"], "--screenshots needs --demo"),
    (["run"], "no config file"),
    (["revoke"], "either SHOPPER_ID or --card-uid"),
    (["run", "--script", "x.toml"], "--script needs --demo"),
    (["run", "--demo", "--size", "big"], "is not WIDTHxHEIGHT"),
    (["processor", "fault"], "needs a mode"),
    (["report", "day", "--date", "yesterday"], "is not YYYY-MM-DD"),
])
def test_cli_bad_arguments_exit_2(cli, args, words):
    r = cli(*args)
    assert r.returncode == 2, r
    assert words in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2  # argparse adds a usage line at most


def test_help_lists_every_command(cli):
    r = cli("--help")
    assert r.returncode == 0
    for name in ("run", "enroll", "identify", "revoke", "shoppers", "audit", "sale", "recover", "bench",
                 "doctor", "flash", "purge", "sales", "report", "processor"):
        assert name in r.stdout


def test_a_config_file_must_name_its_terminal(cli, tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('[payment]\nmerchant = "Corner"\n')
    r = cli("--config", p, "config")
    assert r.returncode == 2 and r.stdout == ""
    [line] = r.stderr.strip().splitlines()
    assert "'terminal_id' is required" in line and str(p) in line
    assert load_config(p, demo=True).terminal_id == "demo-terminal"   # `run --demo`, `doctor --demo`


@pytest.mark.parametrize("value, ok", [(0.6, True), (0.45, True), (0.61, False), (1.5, False)])
def test_match_threshold_is_bounded_by_what_was_measured(value, ok):
    text = f'terminal_id = "x"\n[match]\nthreshold = {value}\n'
    if ok:
        assert parse_config(text, "t.toml").match.threshold == value
    else:
        with pytest.raises(ConfigError, match="'match.threshold' must be at most 0.6.*docs/privacy.md"):
            parse_config(text, "t.toml")


def test_cli_errors_say_the_command_once_and_exit_statuses_agree(cli):
    r = cli("enroll", "--name", "A B", "--card-uid", "04A1B2C3", "x.jpg")
    assert r.returncode == 2 and r.stderr.startswith("facepay enroll: error: enrolment needs the shopper's consent")
    assert "enroll: error: enroll:" not in r.stderr
    r = cli("sales", "refund", "last")
    assert r.returncode == 1 and r.stderr.startswith("facepay sales refund: error: there are no sales yet")
    assert cli("sales", "void", "sale_nope").returncode == 1   # not found, the same "no" (README exit table)
    r = cli("--help")
    assert "enrol a shopper from a video of the head-turn challenge" in r.stdout and "from photos (" not in r.stdout
