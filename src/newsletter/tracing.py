"""OpenTelemetry traces, exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and nothing otherwise.

FastAPI opens a span for every HTTP request through the global tracer provider set here. The request's trace
context travels with the work it queues: a W3C `traceparent` stored on the delivery row (or, for a
newsletter, on the issue), from which the worker continues the trace when it sends.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
_enabled = False


def configure_tracing() -> bool:
    """Install an OTLP exporting tracer provider when the standard environment asks for one."""
    global _enabled
    if _enabled or not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return _enabled
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and the exporter's own variables
    # (headers, timeout, compression) are read by the SDK.
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", "newsletter")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _enabled = True
    return True


def shutdown_tracing() -> None:
    """Export what is buffered before the process exits."""
    provider = trace.get_tracer_provider()
    if _enabled and hasattr(provider, "shutdown"):
        provider.shutdown()


def current_traceparent() -> str | None:
    """The W3C traceparent of the span in progress, to be stored with the work it queues."""
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def continued(name: str, work: Iterable[tuple[str | None, str]]) -> Iterator[None]:
    """While a batch is sent and recorded: one span per trace among its (traceparent, kind) items, each a
    child of the request that queued that work, carrying how many deliveries of which kind it covers."""
    if not _enabled:
        yield
        return
    groups = Counter(item for item in work if item[0] is not None)
    tracer = trace.get_tracer("newsletter.worker")
    spans = [
        tracer.start_span(
            name,
            context=_propagator.extract({"traceparent": traceparent}),
            kind=trace.SpanKind.PRODUCER,
            attributes={"newsletter.delivery.kind": kind, "newsletter.deliveries": count},
        )
        for (traceparent, kind), count in groups.items()
    ]
    try:
        yield
    except BaseException as error:
        for span in spans:
            span.record_exception(error)
            span.set_status(trace.StatusCode.ERROR, str(error))
        raise
    finally:
        for span in spans:
            span.end()
