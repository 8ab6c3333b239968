"""fingerd: an RFC 1288 finger server for systemd hosts, with pluggable lookup backends."""

__version__ = "0.1.0"
