"""Acknowledgement: a person has the alert. By a reaction or a reply in its thread (``ack_by``), only from people
Slack places in this organisation, and by reply only from the alert's own people unless the rule lets any
person's reply count. An acknowledged alert is not escalated, and its repeats are held until it is resolved."""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain import keys
from bot.domain.errors import InputError
from bot.domain.models import Organisation
from bot.domain.policy import USERGROUP_ID, AlertRule, Policy
from bot.domain.ports import AlertLog, Directory, SendQueue
from bot.domain.sends import SendRecord
from bot.sending.alerts.rendering import leader


@dataclass(frozen=True, kw_only=True, eq=False)
class Acknowledgement:
    policy: Policy
    alert_log: AlertLog
    sends: SendQueue  # a repeat's alert read
    directory: Directory
    organisation: Organisation | None  # whose people acknowledge alerts (None: nobody's)

    def acknowledges(self, channel_id: str, reaction: str | None) -> bool:
        """Whether a reaction (None: a person's reply in the thread) in this channel may acknowledge an alert; asked
        before anything is looked up."""
        rules = [r for r in self.policy.alerts if channel_id in r.slack_channels]
        if reaction is None:
            return bool(rules)  # the alert's own people's replies acknowledge whatever ``ack_by`` says
        return any("reactions" in r.ack_by and reaction in r.ack_reactions for r in rules)

    async def acknowledge(self, channel_id: str, ts: str, user_id: str, reaction: str | None) -> SendRecord | None:
        """A person has the alert posted at ``ts`` (or the alert a repeat posted there repeats), by ``reaction`` or
        (None) by replying in its thread: the alert when this acknowledged it (the first time).

        Only a person of this organisation acknowledges (Slack's ``users.info`` says), and by replying only when the
        alert's rule has ``replies`` in ``ack_by`` or they are among the alert's own people: a bystander asking "is
        anyone looking at this?" must not stop the escalation. The database is asked first, Slack last."""
        posted = await leader(self.sends, await self.alert_log.by_key(keys.alert(channel_id, ts)))
        if posted is None or posted.acked_by is not None or posted.resolved_at is not None:
            return None  # not a forwarded alert, or acknowledged (or resolved) before
        rule = self.policy.alert_rule(posted.request.alert.rule) if posted.request.alert else None
        if rule is None:
            return None
        if reaction is not None and not ("reactions" in rule.ack_by and reaction in rule.ack_reactions):
            return None
        if reaction is None and "replies" not in rule.ack_by and not await self._among_its_people(rule, user_id):
            return None
        if not await self._of_this_organisation(user_id):
            return None
        return await self.alert_log.acknowledge(posted, user_id)

    async def _among_its_people(self, rule: AlertRule, user_id: str) -> bool:
        """Whether the user is in a Slack user group the rule's alerts or escalation steps go to, as Slack says now
        (cached briefly): the people on call. Numbers listed in the policy belong to nobody, and a profile phone
        (anyone may edit theirs) says nothing about who someone is."""
        targets = [*rule.to, *(t for step in rule.escalate for t in step.to)]
        for group in dict.fromkeys(t for t in targets if USERGROUP_ID.match(t)):
            try:
                if user_id in await self.directory.group_members(group):
                    return True
            except InputError:  # the group is gone: nobody is in it
                continue
        return False

    async def _of_this_organisation(self, user_id: str) -> bool:
        """Whether the user is a person of the workspace (or Grid org) the bot is installed in: not a bot, not a
        deactivated account, not someone of another organisation in a Slack Connect channel."""
        if self.organisation is None:
            return False
        try:
            person = await self.directory.person(user_id)
        except InputError:  # Slack shows this workspace no such user
            return False
        return self.organisation.includes(person)
