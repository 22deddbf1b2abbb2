"""`GET /metrics` in the Prometheus text format (prometheus_client), read at each scrape from what
the workers and the API count in Redis (worker/metrics.py), so every API process answers the same:

    tunesmith_jobs_total{kind, state}          jobs that entered each state (counter)
    tunesmith_queue_depth{queue}               messages waiting in each Celery queue (gauge)
    tunesmith_job_latency_seconds              submit-to-done of succeeded melody jobs (histogram)
    tunesmith_batch_rows                       melodies per network step of the engines (histogram)
    tunesmith_generated_tokens_total           tokens generated (counter; rate() gives tokens/s)
    tunesmith_tokens_per_second                the engines' rate over their last second (gauge)
    tunesmith_backlog_work / _jobs / _clients  unfinished melody work (bars x count), its jobs and clients
    tunesmith_limit{name}                      the admission limits in force (service/admission.py), and
                                               max_streams_per_process (service/events.py)
    tunesmith_refused_total{reason}            submissions refused: backlog, client_work, rate; and event
                                               streams refused for want of a slot: streams
    tunesmith_streams_open{process}            event streams and `Prefer: wait` requests each API process
                                               holds open (gauge; sum() for the service's)

Training jobs are counted when queued and cancelled; their other states are in their records.
"""
import math

from flask import Blueprint, Response, current_app
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from service.admission import limits, refused_counts
from service.events import open_streams
from worker import metrics_snapshot

bp = Blueprint("metrics", __name__)
QUEUES = ("generate", "train")


class RedisCollector:
    """A prometheus_client collector over one Runtime's counters."""

    def __init__(self, runtime, limits: dict):
        self.runtime, self.limits = runtime, limits

    def collect(self):
        snap = metrics_snapshot(self.runtime.redis, self.runtime.jobs.prefix, QUEUES)
        jobs = CounterMetricFamily("tunesmith_jobs", "Jobs that entered each state", labels=["kind", "state"])
        for (kind, state), n in sorted(snap["jobs"].items()):
            jobs.add_metric([kind, state], n)
        yield jobs
        depth = GaugeMetricFamily("tunesmith_queue_depth", "Messages waiting in each queue", labels=["queue"])
        for queue, n in snap["queues"].items():
            depth.add_metric([queue], n)
        yield depth
        for name, doc, hist in (("tunesmith_job_latency_seconds", "Submit to done, succeeded melody jobs",
                                 snap["latency"]),
                                ("tunesmith_batch_rows", "Melodies per network step", snap["rows"])):
            yield HistogramMetricFamily(name, doc, buckets=_cumulative(hist["buckets"]), sum_value=hist["sum"])
        yield CounterMetricFamily("tunesmith_generated_tokens", "Tokens generated", value=snap["tokens"])
        yield GaugeMetricFamily("tunesmith_tokens_per_second", "Tokens per second over the engines' last second",
                                value=snap["tokens_per_s"])
        backlog = self.runtime.backlog.totals()
        for what, doc in (("work", "Unfinished melody work, in bar-melodies"), ("jobs", "Unfinished melody jobs"),
                          ("clients", "Clients with unfinished melody work")):
            yield GaugeMetricFamily(f"tunesmith_backlog_{what}", doc, value=backlog[what])
        limit = GaugeMetricFamily("tunesmith_limit", "Admission limits in force", labels=["name"])
        for name, value in self.limits.items():
            limit.add_metric([name], value)
        yield limit
        refused = CounterMetricFamily("tunesmith_refused", "Submissions (and event streams) refused",
                                      labels=["reason"])
        for reason, n in sorted(refused_counts(self.runtime).items()):
            refused.add_metric([reason], n)
        yield refused
        streams = GaugeMetricFamily("tunesmith_streams_open", "Event streams and waiting requests open, per API process",
                                    labels=["process"])
        for process, n in sorted(open_streams(self.runtime.redis, self.runtime.jobs.prefix).items()):
            streams.add_metric([process], n)
        yield streams


def _cumulative(buckets: list) -> list:
    """[(le, count in that bucket)] -> prometheus_client's [(le text, cumulative count)]."""
    out, total = [], 0
    for le, n in buckets:
        total += n
        out.append(("+Inf" if math.isinf(le) else repr(float(le)), total))
    return out


@bp.get("/metrics")
def metrics():
    registry = CollectorRegistry(auto_describe=False)
    config = current_app.config
    shown = {**limits(config), "max_streams_per_process": config["TUNESMITH_MAX_STREAMS"]}
    registry.register(RedisCollector(current_app.extensions["tunesmith"], shown))
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4; charset=utf-8")
