"""Test material and doubles shipped with the terminal (as gpiozero ships its mock pins, trio ``trio.testing``).

Nothing here runs on a kiosk with a real camera: it serves ``facepay run --demo``, the kiosk
scenarios (``--script``), the liveness benchmarks and the tests.

- :mod:`.synth`: generated presentations for the liveness check (genuine head turns and attacks);
- :mod:`.clips`: rendered frames held JPEG-compressed in memory, decoded when the replay camera reads them;
- :mod:`.shopper`: ``DemoShopper``, the demo's simulated shopper in front of the replay camera;
- :mod:`.scenario`: the kiosk scenario files (tests/scenarios/*.toml): loading, the rendered material
  they show and their expectations; the Kivy driving lives in :mod:`terminal.ui.scenario`.
"""
