"""The two admission drivers: a blocking one for ``produce()`` and an asyncio one for ``aproduce()``.

`sluice.admission.Admission` decides and these act on its `Step`s: wait (sleeping while serving
delivery reports, or awaiting), serialize (inline, or in a worker thread), enqueue, dead-letter.
They sit between `sluice.core` (ticks, plans, housekeeping) and the public class in
``sluice.producer``, so that module keeps the public API; the passthrough path of ``produce()``
never reaches them.
"""

from __future__ import annotations

import asyncio
import functools

from confluent_kafka import KafkaException

from sluice.admission import Admission, Step
from sluice.core import ProducerCore, _monotonic
from sluice.dlq import normalize_headers
from sluice.errors import ProducerClosedError
from sluice.serde import SerializationFailure, serialize

__all__ = ["AdmissionDrivers"]


class AdmissionDrivers(ProducerCore):
    """Run an `Admission` to its end, blocking (`_admit`) or on the event loop (`_aadmit`)."""

    def _admit(self, adm: Admission, step: Step) -> None:
        """Run an admission to its end, blocking (waits serve delivery reports)."""
        try:
            self._drive(adm, step)
        except BaseException:
            adm.abandon(_monotonic())  # e.g. KeyboardInterrupt in a wait: give back a pacing ticket
            raise

    def _drive(self, adm: Admission, step: Step) -> None:
        while True:
            if step is Step.WAIT:
                self._wait(adm.wait_s)
                step = adm.waited(_monotonic(), self._current_plan(adm.plan.priority))
            elif step is Step.SERIALIZE:
                try:
                    key, value = serialize(adm.topic, adm.key, adm.value, adm.headers, self._key_serializer,
                                           self._value_serializer)
                except SerializationFailure as failure:
                    step = adm.serialize_failed(failure, _monotonic())
                else:
                    step = adm.serialized(key, value)
            elif step is Step.ENQUEUE:
                step = self._enqueue(adm)
            else:
                self._finish(adm, step)
                return

    async def _aadmit(self, adm: Admission, step: Step) -> None:
        """Run an admission to its end without blocking the event loop."""
        try:
            await self._adrive(adm, step)
        except BaseException:
            adm.abandon(_monotonic())  # e.g. the task was cancelled while it waited for a token
            raise

    async def _adrive(self, adm: Admission, step: Step) -> None:
        while True:
            if step is Step.WAIT:
                await asyncio.sleep(adm.wait_s)
                step = adm.waited(_monotonic(), self._current_plan(adm.plan.priority))
            elif step is Step.SERIALIZE:
                try:
                    key, value = await asyncio.to_thread(serialize, adm.topic, adm.key, adm.value, adm.headers,
                                                         self._key_serializer, self._value_serializer)
                except SerializationFailure as failure:
                    step = adm.serialize_failed(failure, _monotonic())
                else:
                    step = adm.serialized(key, value)
            elif step is Step.ENQUEUE:
                step = self._enqueue(adm)
            else:
                self._finish(adm, step)
                return

    def _enqueue(self, adm: Admission) -> Step:
        """One attempt to hand the message to librdkafka; refused for good once `close` began."""
        idx = adm.plan.idx
        if adm.headers is None and adm.user_cb is self._default_cb:
            dr = self._drs[idx]
        else:
            dr = functools.partial(self._router.on_report, idx, adm.user_cb, 1, normalize_headers(adm.headers) or None)
        with self._lock:
            if self._closed:
                raise ProducerClosedError("producer is closed")
            try:
                self._produce(adm.topic, adm.value, adm.key, -1, dr, None, 0, adm.headers)
            except (BufferError, KafkaException) as exc:
                return adm.enqueue_failed(exc, _monotonic())
        return adm.enqueued()

    def _finish(self, adm: Admission, step: Step) -> None:
        if step is Step.DEAD_LETTER and adm.letter is not None:
            self._router.accept(adm.letter, adm.plan.idx, adm.user_cb, adm.letter_err)
