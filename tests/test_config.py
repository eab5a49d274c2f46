import pytest

from terminal.config import Config, load_config, parse_config, to_toml
from terminal.errors import ConfigError


def test_defaults_are_the_demo_setup():
    cfg = load_config(None)
    assert cfg.camera.backend == "replay" and cfg.leds.backend == "mock" and cfg.reader.port == "sim"
    assert cfg.payment.processor == "sandbox"


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
    ('terminal_id = "x"\n[camera]\nbackend = "webcam"\n', "'camera.backend' must be one of"),
    ('terminal_id = "x"\ncamera = 3\n', "'camera' must be a table"),
    ('terminal_id = "x"\n[leds]\nprivacy = 27\n', "LED pins in [leds] must all be different"),
    ('terminal_id = "x"\n[payment]\ncurrency = "EURO"\n', "3-letter ISO 4217"),
    ('terminal_id = ""\n', "'terminal_id' must not be empty"),
    ('terminal_id = "x"\n[match]\nthreshold = -1\n', "'match.threshold' must be greater than 0"),
    ('terminal_id = "x\n', "not valid TOML"),
])
def test_bad_config_names_key_and_file(text, words):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "/etc/facepay/terminal.toml")
    assert words in str(err.value)
    assert "/etc/facepay/terminal.toml" in str(err.value)


def test_round_trip_through_toml():
    cfg = Config(terminal_id="a\"b")
    again = parse_config(to_toml(cfg), "x")
    assert again == Config(terminal_id='a"b', source="x")


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
