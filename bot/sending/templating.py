"""A WhatsApp template request checked: whose template it is (the sender asked for, else the first this user may
use here that has it) and its text filled in with the request's values, or each problem in the requester's words."""

from __future__ import annotations

from bot.domain.alerts import WHATSAPP_MAX_CHARS
from bot.domain.models import SendRequest, Via
from bot.domain.policy import Dimension, Policy, PolicySurface, allowed_templates
from bot.domain.templates import param_problem
from bot.sending import texts
from bot.sending.problems import Part, Problem


def filled_in(
    policy: Policy, request: SendRequest, user_groups: frozenset[str], surface: PolicySurface | None = None
) -> tuple[str, str] | list[Problem]:
    """The sender whose template the request names and the template filled in; or why not (``user_groups``: the
    user's policy groups, asked only when the request names no sender)."""
    sender = _sender(policy, request, user_groups, surface)
    return [sender] if isinstance(sender, Problem) else _fill_in(policy, request, sender)


def _sender(
    policy: Policy, request: SendRequest, user_groups: frozenset[str], surface: PolicySurface | None
) -> str | Problem:
    assert request.template is not None  # noqa: S101 - asked only for template requests
    alias = request.template.alias
    if request.via is not Via.WHATSAPP:
        return Problem(Part.TEMPLATE, texts.templates_are_for_whatsapp())
    if request.sender is not None:
        sender = policy.senders.get(request.sender)
        if sender is None:
            return Problem(Part.POLICY, texts.unknown_sender(request.sender), denied=True, dimension=Dimension.SENDER)
        if alias not in sender.templates:
            return Problem(Part.TEMPLATE, texts.no_such_template(request.sender, alias))
        return request.sender
    mine = allowed_templates(policy, request.user_id, request.channel_id, user_groups, surface)
    if alias in mine:
        return mine[alias]
    known = texts.templates_you_may_use(mine)
    if any(alias in s.templates for s in policy.senders.values()):
        reason = texts.template_not_yours(alias, texts.conversation_label(request.channel_id), known)
        return Problem(Part.POLICY, reason, denied=True, dimension=Dimension.TEMPLATE)
    return Problem(Part.TEMPLATE, texts.no_whatsapp_template(alias, known))


def _fill_in(policy: Policy, request: SendRequest, sender: str) -> tuple[str, str] | list[Problem]:
    """The sender and the template's text with the request's values; or each value WhatsApp would refuse."""
    assert request.template is not None  # noqa: S101 - asked only for template requests
    use = request.template
    template = policy.senders[sender].templates[use.alias]
    names = [p.name for p in template.params]
    if len(use.values) != len(names):
        return [Problem(Part.TEMPLATE, texts.template_takes(use.alias, names, len(use.values)))]
    problems = [
        Problem(Part.PARAMETER, problem, index=i)
        for i, (name, value) in enumerate(zip(names, use.values, strict=True))
        if (problem := param_problem(name, value))
    ]
    if problems:
        return problems
    text = template.render(use.values, use.alias)
    if len(text) > WHATSAPP_MAX_CHARS:
        return [Problem(Part.TEMPLATE, texts.whatsapp_too_long(len(text), WHATSAPP_MAX_CHARS, filled_in=True))]
    return sender, text
