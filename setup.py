import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# One version, kept in terminal/__init__.py (`facepay --version` prints it).
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "terminal" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="facepay-terminal",
    version=VERSION,
    description="Open face-payment point-of-sale terminal for Raspberry Pi: opt-in only, off means deleted",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    # Raspberry Pi OS Bookworm (Python 3.11) and Trixie (Python 3.13): picamera2 comes from apt, built for the
    # system Python, so the venv uses that Python.
    python_requires=">=3.11,<3.14",
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.13",
        "Operating System :: POSIX :: Linux",
    ],
    packages=find_packages(include=["terminal", "terminal.*", "firmware_bridge", "firmware_bridge.*"]),
    # Everything read at run time (kv layouts, consent texts, fonts, demo photos, models) is package data.
    package_data={"terminal": ["assets/**/*", "models/**/*"]},
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
                 # writes and checks the lock files (make lock, tests/test_packaging.py)
                 "uv>=0.9",
                 # third-party PN532 driver the simulator is checked against
                 "adafruit-circuitpython-pn532", "adafruit-blinka"],
    },
    entry_points={"console_scripts": ["facepay=terminal.cli:main"]},
)
