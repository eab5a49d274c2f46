"""The kiosk's run-time assets, installed as the data package ``terminal.assets``.

This folder is the checkout's top-level ``assets/`` (kv layouts, consent texts, fonts, demo photos,
locale catalogues); setup.py maps it to ``terminal.assets`` (``package_dir``), so the wheel carries it
inside the ``terminal`` package and the code finds it with ``importlib.resources.files("terminal.assets")``
in a checkout (editable install) and in an installed wheel alike.  No code here.
"""
