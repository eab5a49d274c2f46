"""The serial link to the NXP PN532 card reader (HSU/UART), and its simulator.

- :mod:`firmware_bridge.frames`: the frame encoder and parser (pure functions)
- :mod:`firmware_bridge.pn532`: the driver over pyserial (``serial_for_url``)
- :mod:`firmware_bridge.service`: the polling thread that emits card events
- :mod:`firmware_bridge.commands`: the PN532 commands by name, shared by the driver and the chip model
- :mod:`firmware_bridge.chip`: the PN532 as a pure model (bytes in, bytes out, no I/O)
- :mod:`firmware_bridge.sim`: that model on a pseudo-terminal, byte for byte, with a cable's faults
"""
