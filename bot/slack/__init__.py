"""The Slack surface: Bolt listeners, the command grammar, Block Kit builders and Slack-backed ports."""
