"""[liveness] in terminal.toml: defaults, every value range-checked, and what the machine does with it."""

import pytest

from terminal import checkout as co
from terminal.config import Config, parse_config
from terminal.errors import ConfigError


def test_defaults():
    lv = Config().liveness
    assert (lv.required, lv.min_yaw_deg, lv.planarity_min, lv.timeout_s) == (True, 15.0, 0.055, 4.0)
    assert (lv.relief_min, lv.flow_max, lv.max_yaw_rate_dps, lv.min_turn_frames) == (0.097, 0.08, 300.0, 2)


def test_a_full_section_parses():
    cfg = parse_config('terminal_id = "x"\n[liveness]\nrequired = false\nmin_yaw_deg = 20\n'
                       'planarity_min = 0.08\ntimeout_s = 6\n', "t.toml")
    assert (cfg.liveness.required, cfg.liveness.min_yaw_deg, cfg.liveness.planarity_min,
            cfg.liveness.timeout_s) == (False, 20.0, 0.08, 6.0)


@pytest.mark.parametrize("line,words", [
    ("min_yaw_deg = 5", "'liveness.min_yaw_deg' must be greater than or equal to 8, not 5"),
    ("min_yaw_deg = 41", "'liveness.min_yaw_deg' must be less than or equal to 40"),
    ("planarity_min = 0", "'liveness.planarity_min' must be greater than or equal to 0.005"),
    ("planarity_min = 0.9", "'liveness.planarity_min' must be less than or equal to 0.5"),
    ("timeout_s = 0.5", "'liveness.timeout_s' must be greater than or equal to 1"),
    ("timeout_s = 31", "'liveness.timeout_s' must be less than or equal to 30"),
    ("required = 1", "'liveness.required' must be true or false"),
    ("relief_min = 0", "'liveness.relief_min' must be greater than or equal to 0.005"),
    ("relief_min = 0.6", "'liveness.relief_min' must be less than or equal to 0.5"),
    ("flow_max = 0.001", "'liveness.flow_max' must be greater than or equal to 0.01"),
    ("flow_max = 2", "'liveness.flow_max' must be less than or equal to 1"),
    ("max_yaw_rate_dps = 10", "'liveness.max_yaw_rate_dps' must be greater than or equal to 60"),
    ("max_yaw_rate_dps = 5000", "'liveness.max_yaw_rate_dps' must be less than or equal to 2000"),
    ("min_turn_frames = 0", "'liveness.min_turn_frames' must be greater than or equal to 1"),
    ("min_turn_frames = 11", "'liveness.min_turn_frames' must be less than or equal to 10"),
    ("min_yaw_deg = \"15\"", "'liveness.min_yaw_deg' must be a number"),
    ("blink = true", "unknown key 'liveness.blink'"),
])
def test_out_of_range_values_are_refused(line, words):
    with pytest.raises(ConfigError) as err:
        parse_config(f'terminal_id = "x"\n[liveness]\n{line}\n', "/etc/facepay/terminal.toml")
    assert words in str(err.value) and "/etc/facepay/terminal.toml" in str(err.value)


def test_cli_reports_a_bad_range_in_one_line(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('terminal_id = "x"\n[liveness]\ntimeout_s = 100\n')
    r = cli("--config", bad, "liveness", "--frames", tmp_path, "--challenge", "left")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "liveness.timeout_s" in r.stderr


def test_the_policy_follows_required():
    strict = co.CheckoutMachine(co.Policy())
    strict.handle(co.StartSale("s", 100, "EUR"))
    opened = [e for e in strict.handle(co.ChooseFace()) if isinstance(e, co.OpenCamera)]
    assert opened[0].challenge in ("left", "right")
    with pytest.raises(co.Rejected, match="no liveness, no match"):
        strict.handle(co.FaceMatched(co.ShopperView("shp_1", "A.", "•••• 1", "t", True), 0.3, 0.3, 1))
    loose = co.CheckoutMachine(co.Policy(liveness_required=False))
    loose.handle(co.StartSale("s", 100, "EUR"))
    assert [e for e in loose.handle(co.ChooseFace()) if isinstance(e, co.OpenCamera)][0].challenge is None


def test_the_challenge_given_is_kept_and_checked():
    m = co.CheckoutMachine(co.Policy())
    m.handle(co.StartSale("s", 100, "EUR"))
    with pytest.raises(co.Rejected):
        m.handle(co.ChooseFace("up"))
    assert m.state == co.State.AMOUNT_DUE
    m.handle(co.ChooseFace("right"))
    assert m.view().challenge == "right" and m.snapshot()["challenge"] == "right"


def test_three_failures_in_a_row_cool_down_face_pay():
    m = co.CheckoutMachine(co.Policy())
    m.handle(co.StartSale("s", 100, "EUR"))
    effects = []
    for _ in range(3):
        m.handle(co.ChooseFace())
        effects = m.handle(co.LivenessFailed("flat"))
        assert m.state == co.State.AMOUNT_DUE and m.view().message == "liveness_failed"
    cool = [e for e in effects if isinstance(e, co.StartCooldown)]
    assert cool and cool[0].seconds == 60
    assert [e.kind for e in effects if isinstance(e, co.Record)] == ["liveness_failed", "liveness_cooldown"]
    with pytest.raises(co.Rejected, match="cooling down"):
        m.handle(co.ChooseFace())
    m.handle(co.CooldownOver(cool[0].token))
    m.handle(co.ChooseFace())
    m.handle(co.LivenessPassed())   # a pass resets the count
    m.handle(co.FaceNoMatch("no match"))
    for _ in range(2):
        m.handle(co.ChooseFace())
        m.handle(co.LivenessFailed("timeout"))
    assert not m.view().cooldown
