package io.jvhost.vhostuser;

import io.jvhost.iothread.AioContext;
import io.jvhost.iothread.WrongThreadException;
import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.*;

/**
 * The main-thread rule: a virtqueue handler runs only on its queue's iothread. First a handler of a live queue is
 * called on purpose from the main loop, a plain thread and another queue's iothread, and must refuse each time;
 * then (this class runs last, see junit-platform.properties) the whole suite's record is checked: apart from
 * those deliberate calls no handler ever ran on a wrong thread, and every handler ran on its own iothread.
 */
@Order(Integer.MAX_VALUE)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@Timeout(30)
class ThreadRuleTest extends ExportTestBase {

    /** Calls q's kick handler on ctx's thread, which must refuse it. */
    private static void expectRefusedIn(AioContext ctx, BlkQueue q) throws Exception {
        HandlerRuns.expectWrongThread(q, ctx.thread());
        CompletableFuture<Void> f = ctx.submit(() -> {
            q.runKickHandlerInCallingThread();
            return null;
        });
        ExecutionException e = assertThrows(ExecutionException.class, () -> f.get(10, TimeUnit.SECONDS));
        assertInstanceOf(WrongThreadException.class, e.getCause(), () -> "ran in " + ctx.name() + ": " + e.getCause());
        assertTrue(e.getCause().getMessage().contains(q.context().name()), e.getCause()::getMessage);
    }

    @Test
    @Order(1)
    void virtqueueHandlerRefusesToRunOutsideItsIothread() throws Exception {
        open(export().numQueues(2), new VhostUserFrontend.Options().numQueues(2));
        DriverQueue q0 = fe.queue(0), q1 = fe.queue(1);
        ok(q0, BlkRequest.flush());
        ok(q1, BlkRequest.flush());
        BlkQueue live = HandlerRuns.queue(ex.queueName(1, 0));
        assertNotNull(live, "queue 0 ran handlers");
        assertSame(ex.queueThreads.get(0), live.context());
        long before = BlkQueue.WRONG_THREAD_RUNS.get();

        // Requests made available without a kick: a kick handler that wrongly ran would take them.
        q0.enqueue(BlkRequest.read(0, 512));
        q0.enqueue(BlkRequest.read(8, 4096));
        q0.publish();
        expectRefusedIn(ex.mainLoop, live);               // the main loop
        expectRefusedIn(ex.queueThreads.get(1), live);    // another queue's iothread
        HandlerRuns.expectWrongThread(live, Thread.currentThread());
        assertThrows(WrongThreadException.class, live::runKickHandlerInCallingThread); // a plain thread
        assertEquals(before + 3, BlkQueue.WRONG_THREAD_RUNS.get(), "each refused run is counted");

        // Refused means nothing happened: nothing was taken; the queue still serves from its own iothread.
        assertEquals(1, q0.usedIdx(), "only the first flush was ever completed");
        q0.notifyDevice();
        assertEquals(2, q0.awaitUsed(2, T).size());
        ok(q0, BlkRequest.write(16, new byte[4096]));
        assertEquals(Set.of(ex.queueThreads.get(0).thread().getName()), HandlerRuns.THREADS.get(ex.queueName(1, 0)));
    }

    @Test
    @Order(2)
    void noHandlerOfTheWholeSuiteEverRanOnAWrongThread() throws Exception {
        // Some load of our own, so that this check means something even when the class runs alone.
        open(export().numQueues(3).sharedIothread(true), new VhostUserFrontend.Options().numQueues(3));
        for (DriverQueue q : fe.queues()) {
            List<BlkRequest> rs = new ArrayList<>();
            for (int i = 0; i < 16; i++) rs.add(q.submit(BlkRequest.read(i * 8L, 4096)));
            q.awaitAll(rs, T);
        }
        fe.close(); // the stops run handlers too

        List<String> wrong = HandlerRuns.wrong(), expected = HandlerRuns.expectedWrong();
        Collections.sort(wrong);
        Collections.sort(expected);
        assertEquals(expected, wrong, "handler runs on a wrong thread, apart from the deliberate ones");
        assertEquals(expected.size(), BlkQueue.WRONG_THREAD_RUNS.get(), "BlkQueue's own count agrees");
        assertTrue(HandlerRuns.RUNS.get() > 3 * 16, "handler runs recorded: " + HandlerRuns.RUNS.get());
        // Every queue that ever ran a handler did so on exactly one thread: its own iothread, never the main loop.
        assertFalse(HandlerRuns.THREADS.isEmpty());
        for (Map.Entry<String, Set<String>> e : HandlerRuns.THREADS.entrySet()) {
            assertEquals(1, e.getValue().size(), e.getKey() + " ran on " + e.getValue());
            String thread = e.getValue().iterator().next();
            String ctx = HandlerRuns.CONTEXT.get(e.getKey());
            assertTrue(ctx.startsWith("t-io"), e.getKey() + " belongs to " + ctx);
            assertTrue(thread.startsWith(ctx + "-"), e.getKey() + ": thread " + thread + " is not " + ctx + "'s");
        }
    }
}
