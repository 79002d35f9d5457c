"""The pure core: phone numbers, SMS encoding, policy and the values the layers exchange.

Nothing here talks to Slack, HTTP or a database.
"""
