"""The Kivy kiosk.  The only package that imports Kivy: the CLI stays fast and display-free."""
