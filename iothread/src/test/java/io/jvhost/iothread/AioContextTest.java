package io.jvhost.iothread;

import io.jvhost.iothread.sys.EventFd;
import org.junit.jupiter.api.Test;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.*;

class AioContextTest {
    @Test
    void fdHandlerRunsOnItsOwnIoThread() throws Exception {
        try (AioContext io = AioContext.newIoThread("t-io"); EventFd efd = EventFd.create()) {
            AtomicReference<Thread> ran = new AtomicReference<>();
            AtomicReference<Boolean> inIo = new AtomicReference<>();
            CountDownLatch latch = new CountDownLatch(1);
            AioContext.FdHandler h = io.setFdHandler(efd.fd(), () -> {
                efd.drain();
                ran.set(Thread.currentThread());
                inIo.set(AioContext.inIoThread());
                latch.countDown();
            });
            assertTrue(efd.signal());
            assertTrue(latch.await(10, TimeUnit.SECONDS));
            assertSame(io.thread(), ran.get());
            assertTrue(inIo.get());
            assertNotSame(Thread.currentThread(), ran.get());
            assertFalse(AioContext.inIoThread(), "a test thread is not an iothread");
            h.remove();
        }
    }

    @Test
    void mainLoopIsNotAnIoThread() throws Exception {
        try (AioContext main = AioContext.newMainLoop("t-main")) {
            assertFalse(main.call(AioContext::inIoThread, 10, TimeUnit.SECONDS));
            assertSame(main, main.call(AioContext::current, 10, TimeUnit.SECONDS));
        }
    }

    @Test
    void assertInContextThreadRefusesOtherThreads() throws Exception {
        try (AioContext io = AioContext.newIoThread("t-io2"); AioContext main = AioContext.newMainLoop("t-main2")) {
            assertThrows(WrongThreadException.class, () -> io.assertInContextThread("handler"));
            Exception e = assertThrows(java.util.concurrent.ExecutionException.class,
                    () -> main.call(() -> { io.assertInContextThread("handler"); return null; }, 10, TimeUnit.SECONDS));
            assertInstanceOf(WrongThreadException.class, e.getCause());
            io.call(() -> { io.assertInContextThread("handler"); return null; }, 10, TimeUnit.SECONDS);
        }
    }

    @Test
    void bottomHalfCoalescesUntilItRuns() throws Exception {
        try (AioContext io = AioContext.newIoThread("t-io3")) {
            AtomicInteger runs = new AtomicInteger();
            CountDownLatch gate = new CountDownLatch(1);
            BottomHalf bh = io.newBottomHalf(runs::incrementAndGet);
            // Hold the loop so the three schedules below happen before the BH can run.
            io.execute(() -> {
                try {
                    gate.await(10, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            });
            bh.schedule();
            bh.schedule();
            bh.schedule();
            assertTrue(bh.isScheduled());
            gate.countDown();
            io.call(() -> null, 10, TimeUnit.SECONDS); // the BH was queued before this task
            assertEquals(1, runs.get());
            bh.schedule();
            io.call(() -> null, 10, TimeUnit.SECONDS);
            assertEquals(2, runs.get());
        }
    }

    @Test
    void callFromOwnThreadRunsInline() throws Exception {
        try (AioContext io = AioContext.newIoThread("t-io4")) {
            int v = io.call(() -> io.call(() -> 42, 1, TimeUnit.SECONDS), 10, TimeUnit.SECONDS);
            assertEquals(42, v);
        }
    }
}
