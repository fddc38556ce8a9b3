package io.jvhost.iothread;

import io.jvhost.iothread.sys.EventFd;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.lang.invoke.VarHandle;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Adaptive polling against a producer that follows the virtqueue protocol: publish work, full fence, then notify
 * (an eventfd write, i.e. a kick) only if the consumer has notifications on. Polling mode turns them off; the
 * consumer must still find every item (by polling, or by the re-check when it leaves polling mode).
 */
class AdaptivePollingTest {
    private AioContext ctx;
    private Source src;

    @BeforeEach
    void setUp() throws Exception {
        ctx = AioContext.newIoThread("poll-test");
        src = new Source(ctx);
        ctx.call(() -> {
            src.kickHandler = ctx.setFdHandler(src.kick.fd(), src::onKick);
            ctx.addPollHandler(src);
            return null;
        }, 10, TimeUnit.SECONDS);
    }

    @AfterEach
    void tearDown() throws Exception {
        ctx.call(() -> {
            ctx.removePollHandler(src);
            src.kickHandler.remove();
            return null;
        }, 10, TimeUnit.SECONDS);
        ctx.close();
        src.kick.close();
        assertFalse(src.wrongThread, "a poll callback ran outside the iothread");
        assertFalse(src.badOrder, "pollBegin/pollEnd did not alternate");
    }

    /** A consumer of a counter of work items, served by kicks and by polling. */
    static final class Source implements PollHandler {
        final AioContext ctx;
        final EventFd kick;
        AioContext.FdHandler kickHandler;
        final AtomicLong work = new AtomicLong();
        final Semaphore done = new Semaphore(0);
        final AtomicLong kicks = new AtomicLong(), begins = new AtomicLong(), ends = new AtomicLong(), byPoll = new AtomicLong();
        final CountDownLatch begun = new CountDownLatch(1);
        volatile boolean notify = true;
        volatile boolean inMode, wrongThread, badOrder;

        Source(AioContext ctx) throws Exception {
            this.ctx = ctx;
            this.kick = EventFd.create();
        }

        /** The driver side: publish, fence, kick if asked to. */
        void produce() {
            work.incrementAndGet();
            VarHandle.fullFence();
            if (notify) {
                kicks.incrementAndGet();
                kick.signal();
            }
        }

        private long take() {
            long n = work.getAndSet(0);
            if (n > 0) done.release((int) n);
            return n;
        }

        void onKick() {
            kick.drain();
            take();
        }

        private void check() {
            if (!ctx.inContextThread()) wrongThread = true;
        }

        @Override
        public void pollBegin() {
            check();
            if (inMode) badOrder = true;
            inMode = true;
            notify = false;
            begins.incrementAndGet();
            begun.countDown();
        }

        @Override
        public boolean poll() {
            check();
            if (!inMode) badOrder = true;
            if (take() == 0) return false;
            byPoll.incrementAndGet();
            return true;
        }

        @Override
        public boolean pollEnd() {
            check();
            if (!inMode) badOrder = true;
            inMode = false;
            ends.incrementAndGet();
            notify = true;
            VarHandle.fullFence(); // store notify -> load work, against the producer's store work -> load notify
            return take() > 0;
        }
    }

    @Test
    void selfTuningFollowsQemusRule() {
        long max = 32_768;
        assertEquals(0, AdaptivePoller.adjust(0, 1_000, 0, 0, 0), "poll-max-ns=0: never poll");
        assertEquals(AdaptivePoller.POLL_START_NS, AdaptivePoller.adjust(0, 10_000, max, 0, 0), "a short wait starts polling");
        assertEquals(8_000, AdaptivePoller.adjust(4_000, 10_000, max, 0, 0), "default grow doubles");
        assertEquals(12_000, AdaptivePoller.adjust(4_000, 10_000, max, 3, 0), "poll-grow multiplies");
        assertEquals(max, AdaptivePoller.adjust(30_000, 31_000, max, 0, 0), "capped at poll-max-ns");
        assertEquals(16_000, AdaptivePoller.adjust(16_000, 9_000, max, 0, 0), "covered by polling: unchanged");
        assertEquals(0, AdaptivePoller.adjust(16_000, 1_000_000, max, 0, 0), "a long wait resets by default");
        assertEquals(8_000, AdaptivePoller.adjust(16_000, 1_000_000, max, 0, 2), "poll-shrink divides");
        assertEquals(Long.MAX_VALUE, AdaptivePoller.adjust(Long.MAX_VALUE / 2 + 1, Long.MAX_VALUE - 1, Long.MAX_VALUE, 4, 0),
                "no overflow");
    }

    @Test
    void everyItemIsFoundAndPollingSavesKicks() throws Exception {
        ctx.setPollParams(TimeUnit.SECONDS.toNanos(1), 0, 0); // long enough that back-to-back items are polled
        int n = 20_000;
        for (int i = 0; i < n; i++) {
            src.produce();
            assertTrue(src.done.tryAcquire(10, TimeUnit.SECONDS), "item " + i + " was lost (kicks " + src.kicks + ")");
        }
        assertTrue(src.byPoll.get() > 0, "polling never found an item");
        assertTrue(src.kicks.get() < n / 2, "polling should have suppressed most kicks, got " + src.kicks + " of " + n);
        assertTrue(ctx.pollHits() > 0);
        assertTrue(ctx.pollNs() > 0 && ctx.pollNs() <= TimeUnit.SECONDS.toNanos(1), "pollNs " + ctx.pollNs());
    }

    @Test
    void concurrentProducersLoseNothing() throws Exception {
        ctx.setPollParams(20_000, 0, 0); // short: the loop keeps entering and leaving polling mode
        int threads = 3, per = 20_000;
        Thread[] ts = new Thread[threads];
        for (int t = 0; t < threads; t++) {
            ts[t] = new Thread(() -> {
                for (int i = 0; i < per; i++) {
                    src.produce();
                    if ((i & 63) == 63) Thread.yield();
                }
            });
            ts[t].start();
        }
        for (Thread t : ts) t.join(TimeUnit.SECONDS.toMillis(60));
        assertTrue(src.done.tryAcquire(threads * per, 30, TimeUnit.SECONDS),
                "items lost: " + src.done.availablePermits() + " of " + threads * per + " consumed");
    }

    @Test
    void pollMaxNsZeroMeansNotificationsOnly() throws Exception {
        ctx.setPollParams(0, 0, 0);
        for (int i = 0; i < 2_000; i++) {
            src.produce();
            assertTrue(src.done.tryAcquire(10, TimeUnit.SECONDS));
        }
        assertEquals(0, src.begins.get(), "polling must stay off");
        assertEquals(2_000, src.kicks.get());
        assertEquals(0, ctx.pollNs());
    }

    @Test
    void turningPollingOffLeavesPollingModeWithNotificationsOn() throws Exception {
        ctx.setPollParams(TimeUnit.SECONDS.toNanos(1), 0, 0);
        for (int i = 0; i < 100 && src.begun.getCount() > 0; i++) {
            src.produce();
            assertTrue(src.done.tryAcquire(10, TimeUnit.SECONDS));
        }
        assertTrue(src.begun.await(10, TimeUnit.SECONDS), "polling never started");
        ctx.setPollParams(0, 0, 0);
        ctx.execute(() -> {}); // make sure the loop runs again if it is asleep in polling mode
        // Kicks are processed only by the loop's I/O step, where polling mode is left first.
        for (int i = 0; i < 50; i++) {
            src.produce();
            assertTrue(src.done.tryAcquire(10, TimeUnit.SECONDS));
        }
        long begins = src.begins.get();
        assertEquals(begins, src.ends.get(), "still in polling mode");
        assertTrue(src.notify);
        for (int i = 0; i < 50; i++) {
            src.produce();
            assertTrue(src.done.tryAcquire(10, TimeUnit.SECONDS));
        }
        assertEquals(begins, src.begins.get(), "polling started again with poll-max-ns=0");
    }

    @Test
    void mainLoopDoesNotPoll() throws Exception {
        try (AioContext main = AioContext.newMainLoop("poll-main")) {
            assertEquals(0, main.pollMaxNs());
            assertThrows(IllegalStateException.class, () -> main.setPollParams(1000, 0, 0));
            Exception e = assertThrows(java.util.concurrent.ExecutionException.class,
                    () -> main.call(() -> { main.addPollHandler(src); return null; }, 10, TimeUnit.SECONDS));
            assertTrue(e.getCause() instanceof IllegalStateException);
        }
        assertThrows(IllegalArgumentException.class, () -> ctx.setPollParams(-1, 0, 0));
        assertThrows(WrongThreadException.class, () -> ctx.addPollHandler(src));
    }
}
