"""The sending core, one job per module, between the Slack surfaces and the domain:

- ``intake``: an intent kept before the ack;
- ``admission``: the policy check and recipient resolution (one rule, one wording, for every surface);
- ``alerts``: dedup, per-phone limits, summaries and the alert text;
- ``pipeline``: the state machine, D7 called once an intent is checked and announced;
- ``telling``: outcomes told once, result messages kept up to date;
- ``outbox``: the worker that leases intents and runs them through the pipeline;
- ``deliveries``: delivery reports, status look-ups and reconciliation;
- ``inbound``, ``phone_texts``, ``answers``: what phones text back (STOP, START, HELP, ack words, replies) and the
  bot's own answers to them, sent through the outbox.
"""
