"""The shop's till (ECR) over ZVT: codec and messages, serial and TCP transports, and the link that
runs each ZVT command through the same checkout state machine as the staff keypad."""
