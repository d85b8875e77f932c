"""What the admin API answers, as pydantic models: `/openapi.json` describes each response with them, and the
schema test (tests/fuzz) checks every answer against them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from newsletter.domain.vocabulary import (
    DeliveryKind,
    DeliveryStatus,
    EventType,
    IssueStatus,
    LeftReason,
    MemberStatus,
    OptIn,
    SequenceStatus,
    SubscriberStatus,
    SubscriptionStatus,
    SuppressionReason,
    Visibility,
)

Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    next_cursor: str | None = Field(
        description="Pass it back as `cursor` for the next page; null at the end."
    )


class ListCounts(BaseModel):
    confirmed: int
    pending: int
    confirmed_estimated: bool = Field(description="The count is the planner's estimate (a large list).")
    pending_estimated: bool


class ListOut(BaseModel):
    id: int
    slug: str
    name: str
    description: str
    optin: OptIn
    visibility: Visibility
    created_at: datetime
    updated_at: datetime
    subscribers: ListCounts


class SubscriberOut(BaseModel):
    id: int
    email: str
    name: str
    status: SubscriberStatus
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class SubscriptionOut(BaseModel):
    list: str
    status: SubscriptionStatus
    created_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    source: str
    signup_ip: str | None
    signup_user_agent: str | None
    confirm_ip: str | None
    confirm_user_agent: str | None


class SubscriberDetail(SubscriberOut):
    subscriptions: list[SubscriptionOut] = Field(description="With the consent evidence of each.")


class SubscriberExport(BaseModel):
    """Everything held about a person."""

    subscriber: dict[str, Any]
    subscriptions: list[dict[str, Any]]
    confirmation_links: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    suppressions: list[dict[str, Any]]
    bounces_and_complaints: list[dict[str, Any]]
    events: list[dict[str, Any]]


class IssueCounts(BaseModel):
    total: int
    pending: int
    sent: int
    failed: int
    suppressed: int
    cancelled: int


class IssueOut(BaseModel):
    id: int
    subject: str
    status: IssueStatus
    lists: list[str]
    segment: int | None = Field(description="The segment the issue goes to within its lists, if any.")
    segment_expression: str | None = Field(
        description="The segment's expression as the issue was sent with it."
    )
    markdown: str | None
    html: str
    text: str
    send_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: IssueCounts
    progress: int = Field(ge=0, le=100, description="Percent of the deliveries settled.")


class DeliveryOut(BaseModel):
    id: int
    kind: DeliveryKind
    recipient: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    provider_message_id: str | None
    reclaimed: int = Field(description="How often its lease expired while it was sent: a copy is possible.")
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime | None


class Queued(BaseModel):
    queued: int


class Retried(BaseModel):
    retried: int


class SuppressionOut(BaseModel):
    id: int
    email: str
    reason: SuppressionReason
    detail: str
    created_at: datetime


class RejectedRow(BaseModel):
    line: int
    email: str
    reason: str


class ImportReportOut(BaseModel):
    inserted: int = Field(description="New subscribers.")
    updated: int = Field(description="Subscribers who existed already.")
    subscribed: int = Field(description="Subscriptions to the list created, or pending ones confirmed.")
    rejected: list[RejectedRow] = Field(description="The first 10,000 rows left out, each with its reason.")
    rejected_total: int


class EventOut(BaseModel):
    id: int
    type: EventType
    created_at: datetime
    data: dict[str, Any] = Field(
        description="Ids, and the fields that changed; an erased person's events lose their personal fields."
    )


class EventPage(BaseModel):
    items: list[EventOut]
    next_after: int | None = Field(
        description="Pass it back as `after` to read on (the last event's id; the `after` given when there "
        "is nothing newer yet)."
    )


class WebhookOut(BaseModel):
    id: int
    url: str
    description: str
    events: list[str] = Field(description='The event types it receives; `["*"]`: every type.')
    active: bool
    created_at: datetime
    updated_at: datetime
    failing_since: datetime | None = Field(description="Its first failure since it last succeeded.")
    retry_at: datetime | None = Field(description="While it is down: when it is tried again.")
    disabled_at: datetime | None
    disabled_reason: str | None = Field(description="Why it was turned off (failing too long, 410 Gone).")
    waiting: int = Field(description="Events not yet delivered to it.")
    oldest_waiting: datetime | None


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="The signing secret (`whsec_...`, Standard Webhooks); shown in this answer only."
    )


class WebhookAttemptOut(BaseModel):
    id: int
    delivery_id: int
    event_id: int
    event_type: EventType | None = Field(description="Null once the event has been trimmed.")
    attempted_at: datetime
    duration_ms: int
    status_code: int | None = Field(description="The endpoint's HTTP status; null when it did not answer.")
    error: str | None
    delivery_status: Literal["queued", "sending", "delivered", "failed"] | None
    delivery_attempts: int | None


class WebhookTestOut(BaseModel):
    delivery_id: int
    event_id: int


class MemberCounts(BaseModel):
    active: int = Field(description="On their way through the steps.")
    completed: int = Field(description="Sent every step.")
    left: int = Field(description="Unsubscribed, suppressed or blocklisted before the end.")


class SequenceOut(BaseModel):
    id: int
    name: str
    list: str
    status: SequenceStatus
    steps: int
    members: MemberCounts
    created_at: datetime
    updated_at: datetime


class StepCounts(BaseModel):
    waiting: int = Field(description="Members for whom this step is the next one.")
    queued: int = Field(description="Emails of this step queued or being sent.")
    sent: int = Field(description="Emails of this step handed to the mail server.")


class StepOut(BaseModel):
    id: int
    position: int = Field(ge=1)
    delay_seconds: int = Field(ge=0, description="After entering (the first step) or after the step before.")
    subject: str
    markdown: str | None
    html: str
    text: str
    created_at: datetime
    updated_at: datetime
    counts: StepCounts


class SequenceDetail(SequenceOut):
    steps: list[StepOut]  # type: ignore[assignment]


class MemberOut(BaseModel):
    id: int = Field(description="The subscriber's id.")
    email: str
    status: MemberStatus
    steps_sent: int
    entered_at: datetime
    last_step_at: datetime | None
    next_due_at: datetime | None
    left_at: datetime | None
    left_reason: LeftReason | None


class Entered(BaseModel):
    entered: int


class SegmentOut(BaseModel):
    id: int
    name: str
    expression: str = Field(examples=['attributes.plan = "pro" and confirmed_at > 30d'])
    created_at: datetime
    updated_at: datetime


class SegmentCount(BaseModel):
    count: int = Field(description="The active people the expression matches.")
    estimated: bool = Field(description="Above 50,000 the count is the planner's estimate, to 3 digits.")
