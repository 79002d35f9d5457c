"""The ids the listeners answer, in one place: the manifest test checks that ``manifest.yml`` lists exactly these
commands, shortcuts, events and workflow steps."""

from __future__ import annotations

COMMANDS = ("/sms", "/whatsapp")
SHORTCUTS = ("send_text", "text_this_message")  # global "Send a text"; message "Text this message"
# Alerts (and replies acknowledging them); the Home tab; the workflow step; reactions acknowledging alerts.
EVENTS = ("message", "app_home_opened", "function_executed", "reaction_added")
FUNCTIONS = ("send_text",)  # Workflow Builder custom steps
