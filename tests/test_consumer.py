"""worker/consumer.py: the guards that keep a worker alive when its broker connection was collected
under it (a Sentinel failover: tests/test_failover.py runs the real thing)."""
from types import SimpleNamespace

from kombu.message import Message

from worker.consumer import _closing_quietly, _unless_collected


class Channel:
    def __init__(self, client):
        self.connection = SimpleNamespace(client=client)   # kombu: a channel's transport, its client
        self.acked, self.no_ack_consumers = [], None

    def basic_ack(self, tag, multiple=False):
        self.acked.append(tag)


def test_a_message_of_a_collected_connection_is_not_acknowledged():
    alive = Message(body=b"", channel=Channel(client=object()), delivery_tag="t1")
    ack = _unless_collected(alive.ack_log_error)
    assert ack.__name__ == "ack_log_error" and ack.__self__ is alive   # still the message's method
    ack(None, ())
    assert alive.channel.acked == ["t1"]
    gone = Message(body=b"", channel=Channel(client=None), delivery_tag="t2")
    _unless_collected(gone.ack_log_error)(None, ())        # kombu would raise AttributeError here
    assert gone.channel.acked == [] and not gone.acknowledged


def test_closing_a_collected_connection_does_not_end_the_worker():
    def close():
        raise AttributeError("'NoneType' object has no attribute 'hostname'")
    _closing_quietly(close)()                              # logged, not raised
