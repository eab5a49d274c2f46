"""Run card sales in a loop until killed (the kill -9 crash test)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from terminal.config import Config  # noqa: E402
from terminal.sale import run_sale  # noqa: E402
from terminal.service import Terminal  # noqa: E402

term = Terminal(Config(), Path(sys.argv[1]))
uids = [bytes.fromhex("04A1B2C3"), bytes.fromhex("04000001"), bytes.fromhex("04112233445566")]
i = 0
print("ready", flush=True)
while True:
    cents = 100 + (i * 7) % 900
    run_sale(term, amount=f"{cents // 100}.{cents % 100:02d}", card_uid=uids[i % 3])
    i += 1
