"""The opt-out QR code on the enrolment-done screen: drawn into a Kivy texture in memory, never written to disk."""

from __future__ import annotations

from kivy.graphics import Color, Rectangle
from kivy.graphics.texture import Texture
from kivy.properties import StringProperty
from kivy.uix.widget import Widget


def qr_matrix(text: str) -> list[list[bool]]:
    import qrcode

    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
    qr.add_data(text)
    qr.make(fit=True)
    return qr.get_matrix()


def qr_texture(text: str) -> Texture:
    rows = qr_matrix(text)
    n = len(rows)
    # one byte per module (luminance), bottom row first as OpenGL expects; scaled up with NEAREST filtering
    buf = bytes(0 if cell else 255 for row in reversed(rows) for cell in row)
    tex = Texture.create(size=(n, n), colorfmt="luminance")
    tex.blit_buffer(buf, colorfmt="luminance", bufferfmt="ubyte")
    tex.mag_filter = "nearest"
    tex.min_filter = "nearest"
    return tex


class QrCode(Widget):
    data = StringProperty("")

    def __init__(self, **kw):
        super().__init__(**kw)
        self.bind(data=self._draw, pos=self._draw, size=self._draw)

    def _draw(self, *a):
        self.canvas.clear()
        if not self.data:
            return
        side = min(self.width, self.height)
        with self.canvas:
            Color(1, 1, 1, 1)
            Rectangle(texture=qr_texture(self.data), size=(side, side),
                      pos=(self.center_x - side / 2, self.center_y - side / 2))
