"""Slack → SMS / WhatsApp relay on the D7 Networks API."""

__version__ = "0.1.0"
