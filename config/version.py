"""The build version: protocol v1 clients must send exactly this as protocol_version."""

from importlib.metadata import PackageNotFoundError, version

try:
    SERVER_VERSION: str = version("tilehall")
except PackageNotFoundError:  # running from a tree that was never installed
    SERVER_VERSION = "0.0.0+unknown"
