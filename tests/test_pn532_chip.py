"""The PN532 chip model on its own: bytes in, bytes out, no pty, no thread (milliseconds)."""
import random

import pytest

from firmware_bridge import frames
from firmware_bridge.chip import FIRMWARE, RANDOM, PN532Chip
from firmware_bridge.commands import BAUD_RATES, Command
from firmware_bridge.pn532 import WAKE_UP, parse_targets


def command(code: int, params: bytes = b"") -> bytes:
    return frames.encode(bytes([code]) + params)


def answers(out: list[bytes]) -> list[frames.Frame]:
    return [frames.parse(b).frame for b in out]


@pytest.fixture
def chip():
    c = PN532Chip(rng=random.Random(1))
    c.hear(WAKE_UP, now=0.0)          # wakes it; the preamble's tail passes the wake-up
    return c


def test_starts_in_lowvbat_and_any_byte_wakes_it_losing_what_falls_inside_the_wake_up():
    c = PN532Chip()
    assert c.asleep and c.power == "lowvbat"
    out = c.hear(command(Command.GET_FIRMWARE_VERSION), now=0.0)   # no preamble: its first bytes are lost
    assert out == [] and not c.asleep
    assert c.log and c.log[0][0] == "lost"


def test_acks_then_answers_with_the_reply_code(chip):
    out = chip.hear(command(Command.GET_FIRMWARE_VERSION), now=1.0)
    ack, answer = answers(out)
    assert ack.kind == "ack"
    assert answer.command == Command.GET_FIRMWARE_VERSION.reply and answer.data[1:] == FIRMWARE


def test_a_bad_checksum_is_nacked_and_a_host_nack_repeats_the_last_answer(chip):
    bad = bytearray(command(Command.GET_FIRMWARE_VERSION))
    bad[-2] ^= 0xFF
    assert chip.hear(bytes(bad), now=1.0) == [frames.NACK]
    first = chip.hear(command(Command.DIAGNOSE, b"\x00hi"), now=2.0)[1]
    assert chip.hear(frames.NACK, now=3.0) == [first]


def test_list_passive_target_waits_for_a_card_and_a_host_ack_aborts_it(chip):
    assert answers(chip.hear(command(Command.IN_LIST_PASSIVE_TARGET, b"\x01\x00"), now=1.0))[0].kind == "ack"
    assert chip.listing and chip.serve_pending() == []
    chip.present(bytes.fromhex("04A1B2C3"))
    (answer,) = answers(chip.serve_pending())
    assert answer.command == Command.IN_LIST_PASSIVE_TARGET.reply
    assert parse_targets(answer.data[1:])[0].uid == bytes.fromhex("04A1B2C3")
    chip.remove()
    chip.hear(command(Command.IN_LIST_PASSIVE_TARGET, b"\x01\x00"), now=2.0)
    chip.hear(frames.ACK, now=3.0)
    chip.present(bytes.fromhex("04A1B2C3"))
    assert not chip.listing and chip.serve_pending() == []


def test_a_phone_shows_a_new_random_uid_at_each_activation(chip):
    chip.present(RANDOM)
    uids = []
    for t in range(3):
        out = chip.hear(command(Command.IN_LIST_PASSIVE_TARGET, b"\x01\x00"), now=1.0 + t)
        target = parse_targets(answers(out)[1].data[1:])[0]
        assert target.random_uid and target.ats
        uids.append(target.uid)
    assert len(set(uids)) == 3 and uids == chip.activations


def test_the_new_speed_applies_only_when_the_host_acks_the_answer(chip):
    chip.hear(command(Command.SET_SERIAL_BAUD_RATE, bytes([BAUD_RATES.index(921600)])), now=1.0)
    assert chip.baudrate == 115200 and chip.changing_speed
    chip.hear(frames.ACK, now=2.0)
    assert chip.baudrate == 921600 and not chip.changing_speed


def test_powerdown_without_the_hsu_as_wake_up_source_hears_nothing(chip):
    chip.hear(command(Command.POWER_DOWN, b"\x20"), now=1.0)    # wake on RF only
    assert chip.asleep
    assert chip.hear(WAKE_UP + command(Command.GET_FIRMWARE_VERSION), now=2.0) == []
    assert chip.asleep


def test_an_unknown_command_gets_the_application_error_frame(chip):
    assert chip.hear(command(0x7E), now=1.0) == [frames.ACK, frames.ERROR_FRAME]


def test_every_command_the_driver_sends_is_one_the_chip_model_answers(chip):
    for code in Command:
        params = bytes([0x10]) if code == Command.POWER_DOWN else b"\x01\x00\x00\x00"   # wake on HSU
        out = chip.hear(command(code, params), now=1.0 + code)
        assert out and out[0] == frames.ACK, code.name
        if chip.asleep:                          # PowerDown: wake it again for the next one
            assert chip.hear(WAKE_UP, now=1.7 + code) == [] and not chip.asleep
        else:                                    # abort whatever waits (InListPassiveTarget, a speed change)
            chip.hear(frames.ACK, now=1.5 + code)
