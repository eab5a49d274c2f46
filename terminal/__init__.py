"""facepay: an open face-payment point-of-sale terminal for Raspberry Pi."""

__version__ = "0.2.0"
