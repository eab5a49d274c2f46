"""Payments: a processor interface, the embedded sandbox processor, and the sales journal."""
