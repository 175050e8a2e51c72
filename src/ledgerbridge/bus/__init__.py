"""NATS JetStream event ingest (distributed mode; see docs/distributed.md).

- :func:`ledgerbridge.bus.setup.ensure` (``ledgerbridge bus setup``): the stream (subjects
  ``<prefix>.<system>.<entity>``,
  duplicate window) and the durable pull consumer (max deliver, ack wait), created or updated idempotently;
- :class:`ledgerbridge.bus.publisher.BusPublisher`: publishes source records with ``Nats-Msg-Id`` = the inbox
  idempotency key ``system:entity:id:version`` (JetStream drops repeats inside its duplicate window; the inbox key
  drops the rest), used by :func:`ledgerbridge.flows.intake.accept` when ``bus`` is configured;
- :class:`ledgerbridge.bus.consumer.InboxConsumer`: fetches batches, lands them in the inbox in ONE transaction and
  acks after the commit; unparseable messages and messages past ``max_deliver`` become operational dead letters and
  are terminated so they never loop.
"""

from ledgerbridge.bus.messages import BusMessageError, decode_record, encode_record, subject_for

__all__ = ["BusMessageError", "decode_record", "encode_record", "subject_for"]
