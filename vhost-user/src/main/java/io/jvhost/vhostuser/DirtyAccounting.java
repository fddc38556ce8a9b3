package io.jvhost.vhostuser;

import io.jvhost.virtqueue.DirtyPageSet;

import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.LongAdder;

/**
 * What one device (one front-end connection) has marked in dirty logs, shared by its queues' iothreads: the distinct
 * guest pages (jvhost's private record; the shared log is cleared by the front-end as it copies), and the marks
 * that fell outside the log (a front-end whose log does not cover its own memory). Thread-safe.
 */
final class DirtyAccounting {
    final DirtyPageSet pages = new DirtyPageSet();
    final LongAdder outsideLog = new LongAdder();
    /** One warning per connection: a guest doing I/O must not be able to flood the log. */
    final AtomicBoolean warnedOutside = new AtomicBoolean();
}
