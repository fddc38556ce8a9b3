package io.jvhost.iothread;

import io.jvhost.iothread.sys.EventFd;
import io.netty.channel.uring.IoUring;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Fd handlers on whichever backend iothreads get in this run (the module runs once with -Djvhost.fdmon=auto,
 * i.e. io_uring where available, and once with epoll, see the pom), plus io_uring-specific checks.
 */
class FdMonitorTest {
    private static boolean forcedEpoll() {
        return "epoll".equals(System.getProperty(FdMonitor.PROPERTY));
    }

    @Test
    void iothreadBackendFollowsTheProperty() {
        try (AioContext io = AioContext.newIoThread("t-fdmon"); AioContext main = AioContext.newMainLoop("t-fdmon-main")) {
            assertEquals("epoll", main.fdMonitor());
            assertNull(main.uring());
            if (forcedEpoll() || !IoUring.isAvailable()) {
                assertEquals("epoll", io.fdMonitor());
                assertNull(io.uring());
            } else {
                assertEquals("io_uring", io.fdMonitor());
                assertSame(io, io.uring().context());
            }
        }
    }

    @Test
    void withoutThePropertyIothreadsAreEpollUnlessAskedForIoUring() {
        String saved = System.getProperty(FdMonitor.PROPERTY);
        System.clearProperty(FdMonitor.PROPERTY);
        try (AioContext plain = AioContext.newIoThread("t-plain"); AioContext asked = AioContext.newIoThread("t-asked", true)) {
            assertEquals("epoll", plain.fdMonitor());
            assertNull(plain.uring());
            assertEquals(IoUring.isAvailable() ? "io_uring" : "epoll", asked.fdMonitor());
        } finally {
            if (saved != null) System.setProperty(FdMonitor.PROPERTY, saved);
        }
    }

    @Test
    void manyHandlersEachSeeTheirOwnKicks() throws Exception {
        int n = 64;
        try (AioContext io = AioContext.newIoThread("t-many")) {
            List<EventFd> fds = new ArrayList<>();
            List<AioContext.FdHandler> hs = new ArrayList<>();
            AtomicInteger[] counts = new AtomicInteger[n];
            Semaphore events = new Semaphore(0);
            try {
                for (int i = 0; i < n; i++) {
                    EventFd e = EventFd.create();
                    fds.add(e);
                    AtomicInteger c = counts[i] = new AtomicInteger();
                    hs.add(io.setFdHandler(e.fd(), () -> {
                        c.addAndGet((int) e.drain());
                        events.release();
                    }));
                }
                for (int round = 0; round < 5; round++) {
                    for (int i = 0; i < n; i++) assertTrue(fds.get(i).signal());
                    // Each round, every handler fires at least once (several signals may coalesce in one drain).
                    for (int i = 0; i < n; i++) {
                        int target = round + 1;
                        AtomicInteger c = counts[i];
                        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
                        while (c.get() < target) {
                            assertTrue(System.nanoTime() < deadline, "handler " + i + " saw " + c.get() + " < " + target);
                            events.tryAcquire(100, TimeUnit.MILLISECONDS);
                        }
                    }
                }
                for (int i = 0; i < n; i++) assertEquals(5, counts[i].get(), "handler " + i);
            } finally {
                for (AioContext.FdHandler h : hs) h.remove();
                for (EventFd e : fds) e.close();
            }
        }
    }

    @Test
    void removeThenCloseAndReuseTheNumber() throws Exception {
        try (AioContext io = AioContext.newIoThread("t-reuse")) {
            for (int i = 0; i < 50; i++) {
                EventFd a = EventFd.create();
                AtomicInteger aRuns = new AtomicInteger();
                CountDownLatch aRan = new CountDownLatch(1);
                AioContext.FdHandler ha = io.setFdHandler(a.fd(), () -> {
                    a.drain();
                    aRuns.incrementAndGet();
                    aRan.countDown();
                });
                assertTrue(a.signal());
                assertTrue(aRan.await(10, TimeUnit.SECONDS));
                int number = a.fd();
                ha.remove();
                int before = aRuns.get();
                // Signal after removal, then close: the old handler must never run again.
                a.signal();
                a.close();
                EventFd b = EventFd.create();
                try {
                    assertEquals(number, b.fd(), "the kernel hands out the lowest free number");
                    CountDownLatch bRan = new CountDownLatch(1);
                    AioContext.FdHandler hb = io.setFdHandler(b.fd(), () -> {
                        b.drain();
                        bRan.countDown();
                    });
                    assertTrue(b.signal());
                    assertTrue(bRan.await(10, TimeUnit.SECONDS));
                    hb.remove();
                    io.call(() -> null, 10, TimeUnit.SECONDS); // a full loop pass after the kick
                    assertEquals(before, aRuns.get(), "a removed handler ran");
                } finally {
                    b.close();
                }
            }
        }
    }

    @Test
    void handlerRemovesItselfFromItsCallback() throws Exception {
        try (AioContext io = AioContext.newIoThread("t-self"); EventFd e = EventFd.create()) {
            AtomicInteger runs = new AtomicInteger();
            AioContext.FdHandler[] self = new AioContext.FdHandler[1];
            CountDownLatch ran = new CountDownLatch(1);
            CountDownLatch registered = new CountDownLatch(1);
            self[0] = io.setFdHandler(e.fd(), () -> {
                try {
                    registered.await(10, TimeUnit.SECONDS);
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                }
                runs.incrementAndGet();
                self[0].remove(); // inline on the loop thread: must not deadlock
                ran.countDown();
                // Deliberately not drained: a level-triggered watch that was not removed would fire again.
            });
            registered.countDown();
            assertTrue(e.signal());
            assertTrue(ran.await(10, TimeUnit.SECONDS));
            for (int i = 0; i < 3; i++) {
                e.signal();
                io.call(() -> null, 10, TimeUnit.SECONDS);
            }
            assertEquals(1, runs.get());
        }
    }

    @Test
    void undrainedFdStillSeesEveryNewSignal() throws Exception {
        try (AioContext io = AioContext.newIoThread("t-edge"); EventFd e = EventFd.create()) {
            Semaphore runs = new Semaphore(0);
            AioContext.FdHandler h = io.setFdHandler(e.fd(), runs::release); // never drains
            try {
                for (int i = 0; i < 5; i++) {
                    assertTrue(e.signal());
                    // epoll (level) may call it many times, io_uring (edge) once per signal: at least once each.
                    assertTrue(runs.tryAcquire(10, TimeUnit.SECONDS), "signal " + i + " not seen");
                    io.call(() -> null, 10, TimeUnit.SECONDS);
                    runs.drainPermits();
                }
            } finally {
                h.remove();
            }
        }
    }
}
