"""The PN532 commands this project speaks, by name (UM0701 chapter 7), shared by the driver and the chip model.

Each answer's code is the command's plus one (:attr:`Command.reply`).
"""

from __future__ import annotations

from enum import IntEnum


class Command(IntEnum):
    DIAGNOSE = 0x00
    GET_FIRMWARE_VERSION = 0x02
    GET_GENERAL_STATUS = 0x04
    READ_REGISTER = 0x06
    WRITE_REGISTER = 0x08
    SET_SERIAL_BAUD_RATE = 0x10
    SET_PARAMETERS = 0x12
    SAM_CONFIGURATION = 0x14
    POWER_DOWN = 0x16
    RF_CONFIGURATION = 0x32
    IN_DATA_EXCHANGE = 0x40
    IN_DESELECT = 0x44
    IN_LIST_PASSIVE_TARGET = 0x4A
    IN_RELEASE = 0x52

    @property
    def reply(self) -> int:
        """The code the chip's answer to this command carries."""
        return self + 1


# SetSerialBaudRate's parameter is an index into this table (UM0701 7.2.13).
BAUD_RATES = [9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1288000]

# RFConfiguration item 5: MaxRetries (ATR_REQ, PSL_REQ, passive activation); 0xFF retries forever.
RF_ITEM_MAX_RETRIES = 0x05
# PowerDown's WakeUpEnable bit for the HSU.
POWER_DOWN_WAKE_HSU = 0x10
# SetParameters flag: fetch the ATS of an ISO/IEC 14443-4 card at activation (on after power-up).
PARAM_AUTOMATIC_RATS = 0x10
# The CIU's FIFO data register (ReadRegister / WriteRegister address).
CIU_FIFO_DATA = 0x6339
