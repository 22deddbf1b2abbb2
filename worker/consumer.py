"""The Celery consumer our workers run (Celery's `worker_consumer` setting, worker/settings.py):
Celery's own, with one guard, so that a worker survives its broker dying under it.

When the connection to Redis breaks while the worker holds a task (a primary killed in a Sentinel
failover, a Redis restarted), Celery's consumer first `collect()`s the broken kombu connection,
which closes its transport and drops the transport's reference to the connection
(`transport.client = None`), then `close()`s it. If a channel was left open by the first step (its
pending BRPOP read raised the connection error before the channel marked itself closed), the second
step closes it now: the channel puts its unacknowledged messages back, needs a new connection pool
for that, builds it from `transport.client`'s address, and raises
`AttributeError: 'NoneType' object has no attribute 'hostname'`. Celery ignores only connection
errors there, so the AttributeError ends the worker ("Unrecoverable error") instead of letting it
reconnect. The same happens a moment later when a task that was running then ends and Celery
acknowledges (or rejects) its message on the old, collected channel. Two guards: the close of a
connection already collected may fail so (logged, and the consumer goes on to reconnect); an
acknowledgement for a message whose connection was collected is dropped (logged).

Nothing is lost by skipping either: the messages they concern stay in Redis's `unacked` hash, from
which kombu hands them out again after the visibility timeout (a finished job's is then skipped),
and a job left unfinished is queued again by the lease reaper (worker/leases.py) long before.
"""
import logging
import types

from celery.worker.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)


class Consumer(CeleryConsumer):
    def on_connection_error_after_connected(self, exc):
        connection = self.connection
        if connection is not None:
            connection.close = connection.release = _closing_quietly(connection.close)
        super().on_connection_error_after_connected(exc)

    def call_soon_ack(self, p, *args, **kwargs):
        """Celery's, for `message.ack_log_error` / `reject_log_error`, with the second guard."""
        return super().call_soon_ack(_unless_collected(p), *args, **kwargs)


def _closing_quietly(close):
    def close_collected():
        try:
            close()
        except AttributeError as error:      # the transport is gone already (the docstring above)
            log.warning("closing the broken broker connection: %s (its transport was closed already; "
                        "reconnecting)", error)
    return close_collected


def _unless_collected(acknowledge):
    """`acknowledge` (a Message's bound ack_log_error or reject_log_error), doing nothing when the
    message's connection has been collected by the time it runs. Still a method of the message with
    the same name: the prefork pool recognises pending acknowledgements by that."""
    message = getattr(acknowledge, "__self__", None)
    if message is None:
        return acknowledge

    def guarded(message, *args, **kwargs):
        transport = getattr(message.channel, "connection", None)
        if transport is None or transport.client is None:
            log.warning("task message %s not acknowledged: its broker connection was lost; it stays in "
                        "Redis's unacked set", message.delivery_tag)
            return None
        return acknowledge(*args, **kwargs)
    guarded.__name__ = acknowledge.__name__
    return types.MethodType(guarded, message)
