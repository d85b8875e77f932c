"""Named SQL queries, kept in `.sql` files beside this module and loaded once, when this module is imported,
into one typed registry: `Q.subscribe` is the text of the query named `subscribe`.

A file holds any number of queries, each introduced by a `-- name: query_name` line. Every field of `Queries`
must be defined once in some file and every query in the files must be a field: a missing, doubled or
misspelled query stops the process at start-up (mypy catches a misspelled use), not a request months later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


class QueryError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Queries:
    # access.sql
    token_insert: str
    token_lookup: str
    idempotency_wait_at_most: str
    idempotency_wait_as_usual: str
    idempotency_expire: str
    idempotency_claim: str
    idempotency_saved: str
    idempotency_store: str
    admin_user_insert: str
    admin_user_by_email: str
    admin_user_by_id: str
    admin_user_set_password: str
    admin_session_start: str
    admin_session_get: str
    admin_session_end: str
    admin_sessions_end_others: str
    token_list: str
    token_revoke: str
    purge_idempotency_keys: str
    hit_rate_limits: str
    exceeded_rate_limits: str
    purge_rate_limits: str
    # challenges.sql
    challenge_spend: str
    # dashboard.sql
    dashboard_growth: str
    dashboard_funnel: str
    # deliveries.sql
    claim_deliveries: str
    reclaim_expired_leases: str
    insert_confirmation_tokens: str
    record_outcomes: str
    suppress_addresses: str
    queue_stats: str
    reserve_send_slots: str
    any_due: str
    issue_contents: str
    # events.sql
    events_page: str
    events_recent: str
    events_trim: str
    events_written: str
    # imports.sql
    import_prepare: str
    import_staging: str
    import_analyze: str
    import_restore_suppressions: str
    import_merge: str
    export_subscribers: str
    # issues.sql
    issue_failed_suppressed: str
    issue_get: str
    issue_list_page: str
    issue_insert: str
    issue_update: str
    issue_set_segment: str
    issue_set_lists: str
    issue_lock: str
    issue_schedule: str
    issue_fan_out: str
    fan_out_prepare: str
    issue_started: str
    issues_due: str
    issue_pause: str
    issue_resume: str
    issue_cancel: str
    issue_retry_failed: str
    issue_test_send: str
    issue_deliveries_page: str
    issue_deliveries_attention_page: str
    # lists.sql
    list_insert: str
    list_update: str
    list_delete: str
    lists_by_slug: str
    list_by_slug: str
    without_jit: str
    list_names: str
    lists_counted: str
    public_list: str
    # preferences.sql
    preferences_person: str
    preferences_lists: str
    preferences_join: str
    preferences_rename: str
    # privacy.sql
    subscriber_export: str
    erasure_begin: str
    subscribers_erase: str
    stale_unconfirmed: str
    # reports.sql
    reports_recent: str
    reports_record: str
    reports_lock_addresses: str
    reports_apply: str
    # segments.sql
    segment_insert: str
    segment_get: str
    segments_all: str
    segment_update: str
    segment_delete: str
    segment_count: str
    segment_sample: str
    subscribers_rows: str
    # sequences.sql
    sequence_create: str
    sequences_read: str
    sequence_update: str
    sequence_delete: str
    sequence_steps: str
    step_append: str
    step_update: str
    step_delete: str
    steps_renumber: str
    sequence_reschedule: str
    sequence_members_page: str
    sequence_enroll: str
    sequence_sweep: str
    members_lock: str
    step_contents: str
    import_enters_sequences: str
    # subscribers.sql
    subscriber_insert: str
    subscriber_by_email: str
    subscriptions_add: str
    subscriber_get: str
    subscriber_update: str
    subscriber_deliveries: str
    subscriber_unsubscribe_all: str
    subscribers_page: str
    subscribers_page_in_lists: str
    subscribers_beginning: str
    subscribers_blocklisted: str
    subscribers_page_among: str
    # subscriptions.sql
    subscribe: str
    confirm: str
    token_state: str
    resend_confirmation: str
    unsubscribe_preferences: str
    unsubscribe: str
    # suppressions.sql
    suppressed_among: str
    suppression_page: str
    suppression_add: str
    suppression_get: str
    suppression_delete: str
    # webhooks.sql
    webhook_create: str
    webhook_endpoints: str
    webhook_update: str
    webhook_delete: str
    webhook_attempts_page: str
    webhook_test: str
    webhook_replay: str
    webhook_settle: str
    webhook_reclaim: str
    webhook_give_up: str
    webhook_trim: str
    webhook_backlog: str
    webhooks_due: str


def read_files() -> dict[str, str]:
    """Every named query of the `.sql` files, by name."""
    found: dict[str, str] = {}
    for entry in sorted(resources.files("newsletter.db").joinpath("queries").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        pieces = _NAME.split(entry.read_text(encoding="utf-8"))
        if pieces[0].strip():
            raise QueryError(f"{entry.name} has text before its first '-- name:' line")
        for name, body in zip(pieces[1::2], pieces[2::2], strict=True):
            if name in found:
                raise QueryError(f"query {name!r} is defined twice")
            found[name] = body.strip()
    return found


def load(found: dict[str, str] | None = None) -> Queries:
    """The registry of the queries `found` (by name; those of the .sql files by default)."""
    found = read_files() if found is None else found
    expected = {field.name for field in fields(Queries)}
    missing, unknown = sorted(expected - found.keys()), sorted(found.keys() - expected)
    if missing or unknown:
        raise QueryError(f"queries missing from the .sql files: {missing}; not in Queries: {unknown}")
    return Queries(**found)


Q = load()
