"""The installed package's version, sent in `User-Agent`."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("forge-overlay-client")
except PackageNotFoundError:  # imported from a source tree that was not installed
    __version__ = "0+unknown"
