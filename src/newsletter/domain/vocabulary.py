"""The words of the domain, in one place: every status and kind the code and the database agree on.

Each enumeration here is also a CHECK constraint of the schema (migrations), and a test compares the two
(tests/integration/test_migrations.py); Python code names a status only through these, never as a string.
"""

from __future__ import annotations

from enum import StrEnum

# Subscribers, lists and their subscriptions.
SubscriberStatus = StrEnum("SubscriberStatus", {"ACTIVE": "active", "BLOCKLISTED": "blocklisted"})
SubscriptionStatus = StrEnum(
    "SubscriptionStatus", {"PENDING": "pending", "CONFIRMED": "confirmed", "UNSUBSCRIBED": "unsubscribed"}
)
OptIn = StrEnum("OptIn", {"DOUBLE": "double", "SINGLE": "single"})
# Public lists take sign-ups from the form; private ones only from the operator.
Visibility = StrEnum("Visibility", {"PUBLIC": "public", "PRIVATE": "private"})
SuppressionReason = StrEnum(
    "SuppressionReason",
    {
        "HARD_BOUNCE": "hard_bounce",
        "COMPLAINT": "complaint",
        "UNSUBSCRIBE_ALL": "unsubscribe_all",
        "MANUAL": "manual",
    },
)

# The ledger.
DeliveryKind = StrEnum(
    "DeliveryKind",
    {"CONFIRMATION": "confirmation", "NEWSLETTER": "newsletter", "TEST": "test", "SEQUENCE": "sequence"},
)
DeliveryStatus = StrEnum(
    "DeliveryStatus",
    {
        "QUEUED": "queued",
        "SENDING": "sending",
        "SENT": "sent",
        "FAILED": "failed",
        "BOUNCED": "bounced",
        "COMPLAINED": "complained",
        "SUPPRESSED": "suppressed",
        "CANCELLED": "cancelled",
    },
)

# Outcomes an operator looks into; a partial index holds exactly these (migration 0007).
ATTENTION_STATUSES = frozenset(
    {
        DeliveryStatus.FAILED,
        DeliveryStatus.BOUNCED,
        DeliveryStatus.COMPLAINED,
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.CANCELLED,
    }
)


# An issue's progress counters (issues.<name>_count), kept by the statements that change its deliveries.
ISSUE_COUNTS = (
    "total",
    "pending",
    DeliveryStatus.SENT.value,
    DeliveryStatus.FAILED.value,
    DeliveryStatus.SUPPRESSED.value,
    DeliveryStatus.CANCELLED.value,
)


# Issues, and what an operator does to one (the transitions below say from where).
IssueStatus = StrEnum(
    "IssueStatus",
    {
        "DRAFT": "draft",
        "SCHEDULED": "scheduled",
        "SENDING": "sending",
        "PAUSED": "paused",
        "SENT": "sent",
        "CANCELLED": "cancelled",
    },
)
IssueAction = StrEnum(
    "IssueAction",
    {
        "EDIT": "edit",
        "SEND": "send",
        "PAUSE": "pause",
        "RESUME": "resume",
        "CANCEL": "cancel",
        "RETRY_FAILED": "retry failed",
    },
)


# The issue's state machine: the statuses each action may start from. (Sending, and a paused issue whose last
# deliveries settle, become `sent` in the worker's record of outcomes, not by an action.)
ISSUE_TRANSITIONS: dict[IssueAction, frozenset[IssueStatus]] = {
    IssueAction.EDIT: frozenset({IssueStatus.DRAFT}),
    IssueAction.SEND: frozenset({IssueStatus.DRAFT, IssueStatus.SCHEDULED}),
    IssueAction.PAUSE: frozenset({IssueStatus.SENDING}),
    IssueAction.RESUME: frozenset({IssueStatus.PAUSED}),
    IssueAction.CANCEL: frozenset(
        {IssueStatus.DRAFT, IssueStatus.SCHEDULED, IssueStatus.SENDING, IssueStatus.PAUSED}
    ),
    IssueAction.RETRY_FAILED: frozenset({IssueStatus.SENDING, IssueStatus.PAUSED, IssueStatus.SENT}),
}


def may(action: IssueAction, status: str) -> bool:
    return status in ISSUE_TRANSITIONS[action]


TokenScope = StrEnum("TokenScope", {"ADMIN": "admin", "READ": "read"})
# What a provider or a bounce message reports about an address after sending, and who reported it.
ReportKind = StrEnum(
    "ReportKind", {"HARD_BOUNCE": "hard_bounce", "SOFT_BOUNCE": "soft_bounce", "COMPLAINT": "complaint"}
)
Reporter = StrEnum("Reporter", {"SES": "ses", "SENDGRID": "sendgrid", "POSTMARK": "postmark", "DSN": "dsn"})

# A person's status and a subscription's, as the subscriber filters take either.
SUBSCRIBER_FILTERS = (*SubscriberStatus, *SubscriptionStatus)

# The event record (SPEC section 11): what integrators read from /api/v1/events and receive by webhook.
EventType = StrEnum(
    "EventType",
    {
        "SUBSCRIBER_CREATED": "subscriber.created",
        "SUBSCRIBER_UPDATED": "subscriber.updated",
        "SUBSCRIBER_ERASED": "subscriber.erased",
        "SUBSCRIPTION_PENDING": "subscription.pending",
        "SUBSCRIPTION_CONFIRMED": "subscription.confirmed",
        "SUBSCRIPTION_UNSUBSCRIBED": "subscription.unsubscribed",
        "SUPPRESSION_ADDED": "suppression.added",
        "SUPPRESSION_REMOVED": "suppression.removed",
        "ISSUE_SCHEDULED": "issue.scheduled",
        "ISSUE_SENDING": "issue.sending",
        "ISSUE_PAUSED": "issue.paused",
        "ISSUE_SENT": "issue.sent",
        "ISSUE_CANCELLED": "issue.cancelled",
        "DELIVERY_SENT": "delivery.sent",
        "DELIVERY_FAILED": "delivery.failed",
        "DELIVERY_BOUNCED": "delivery.bounced",
        "DELIVERY_COMPLAINED": "delivery.complained",
        "SEQUENCE_ENTERED": "sequence.entered",
        "SEQUENCE_COMPLETED": "sequence.completed",
        "TX_SENT": "tx.sent",
        "TX_FAILED": "tx.failed",
        "WEBHOOK_DISABLED": "webhook.disabled",
        "WEBHOOK_TEST": "webhook.test",
    },
)

# Automations (SPEC section 12): a sequence sends or holds its steps; a member is on their way through it, has
# been sent every step, or left (and why).
SequenceStatus = StrEnum("SequenceStatus", {"ACTIVE": "active", "PAUSED": "paused"})
MemberStatus = StrEnum("MemberStatus", {"ACTIVE": "active", "COMPLETED": "completed", "LEFT": "left"})
LeftReason = StrEnum(
    "LeftReason", {"UNSUBSCRIBED": "unsubscribed", "SUPPRESSED": "suppressed", "BLOCKLISTED": "blocklisted"}
)
