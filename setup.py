from setuptools import find_packages, setup

setup(
    name="facepay-terminal",
    version="0.1.0",
    description="Open face-payment point-of-sale terminal for Raspberry Pi: opt-in only, off means deleted",
    license="MIT",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["terminal", "terminal.*", "firmware_bridge", "firmware_bridge.*"]),
    # Everything read at run time (kv layouts, consent texts, fonts, demo photos, models) is package data.
    package_data={"terminal": ["assets/**/*", "models/*"]},
    include_package_data=True,
    install_requires=[
        # The last mediapipe line whose wheel ships the face detection model; needs numpy<2, protobuf<5.
        "mediapipe==0.10.18",
        "numpy<2",
        "protobuf<5",
        # Prebuilt dlib (make dlib-blas swaps in a BLAS build, ~6x faster per descriptor).
        "dlib-bin",
        "face_recognition_models==0.3.0",
        "kivy==2.3.1",
        "pyserial>=3.5",
        "gpiozero>=2.0",
        "cryptography>=42",
        "pillow>=10",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.6",
                 # third-party PN532 drivers the simulator is checked against (and libnfc's nfc-list, apt)
                 "adafruit-circuitpython-pn532", "adafruit-blinka",
                 # pure Python; pulls in pyDes (sdist only), ndeflib, libusb1 (not used over a tty)
                 "nfcpy==1.0.4"],
    },
    entry_points={"console_scripts": ["facepay=terminal.cli:main"]},
)
