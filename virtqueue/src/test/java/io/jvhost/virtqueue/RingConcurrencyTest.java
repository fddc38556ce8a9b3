package io.jvhost.virtqueue;

import static io.jvhost.virtqueue.TestGuest.A_GPA;
import static org.junit.jupiter.api.Assertions.*;

import java.lang.invoke.VarHandle;
import java.util.ArrayDeque;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A driver thread and a device thread run a real ring against each other, with semaphores standing in for the
 * kick and call eventfds. Lost notifications (wrong fences or suppression logic) show up as a timed-out wait;
 * torn or reordered ring updates show up as wrong sequence numbers or status bytes.
 */
class RingConcurrencyTest {
    static final int SIZE = 64, SLOTS = SIZE / 2, TOTAL = 200_000;
    static final long DESC = A_GPA + 0x1000, AVAIL = A_GPA + 0x2000, USED = A_GPA + 0x3000;
    static final long HDR = A_GPA + 0x10000, STATUS = A_GPA + 0x20000;
    static final long USED_EVENT = AVAIL + 4 + 2L * SIZE, AVAIL_EVENT = USED + 4 + 8L * SIZE;

    @ParameterizedTest
    @ValueSource(booleans = {false, true})
    void driverAndDeviceOnTwoThreads(boolean eventIdx) throws Exception {
        try (TestGuest g = new TestGuest()) {
            GuestMemory mem = g.mem;
            g.new Driver(SIZE, DESC, AVAIL, USED, 0xfff0); // start near the u16 wrap
            SplitRing ring = new SplitRing(mem, SIZE, DESC, AVAIL, USED, eventIdx, 0xfff0);
            Semaphore kicks = new Semaphore(0), calls = new Semaphore(0);
            AtomicInteger kickCount = new AtomicInteger(), callCount = new AtomicInteger();
            ExecutorService pool = Executors.newFixedThreadPool(2);
            try {
                Future<?> device = pool.submit(() -> {
                    DescChain c = new DescChain(4);
                    long expected = 0;
                    while (true) {
                        do {
                            ring.disableNotification();
                            boolean pushed = false;
                            while (ring.pop(c)) {
                                assertEquals(2, c.count());
                                assertEquals(1, c.readableCount());
                                long seq = mem.readU64(c.addr(0));
                                assertEquals(expected++, seq, "chains arrive in order with their contents");
                                mem.writeU8(c.addr(1), (int) seq);
                                ring.push(c.head(), 1);
                                pushed = true;
                            }
                            if (pushed) {
                                ring.publish();
                                if (ring.needsNotify()) {
                                    callCount.incrementAndGet();
                                    calls.release();
                                }
                            }
                        } while (ring.enableNotification());
                        if (expected == TOTAL) return null;
                        if (!kicks.tryAcquire(10, TimeUnit.SECONDS)) fail("lost kick at seq " + expected);
                    }
                });
                Future<?> driver = pool.submit(() -> {
                    ArrayDeque<Integer> free = new ArrayDeque<>();
                    for (int k = 0; k < SLOTS; k++) free.push(k);
                    long[] slotSeq = new long[SLOTS];
                    int availIdx = 0xfff0, usedSeen = 0xfff0;
                    long nextSeq = 0, completed = 0;
                    while (completed < TOTAL) {
                        boolean progress = false;
                        int u = mem.readU16Acquire(USED + 2);
                        while (usedSeen != u) {
                            long e = USED + 4 + 8L * (usedSeen % SIZE);
                            int id = (int) mem.readU32(e);
                            assertEquals(0, id % 2, "used id is a head we offered");
                            int k = id / 2;
                            assertEquals(1, mem.readU32(e + 4));
                            assertEquals(slotSeq[k] & 0xff, mem.readU8(STATUS + k), "status written before used idx");
                            free.push(k);
                            completed++;
                            usedSeen = (usedSeen + 1) & 0xffff;
                            progress = true;
                        }
                        int oldAvail = availIdx;
                        while (!free.isEmpty() && nextSeq < TOTAL) {
                            int k = free.pop();
                            slotSeq[k] = nextSeq;
                            mem.writeU64(HDR + 16L * k, nextSeq);
                            mem.writeU8(STATUS + k, (int) ~nextSeq);
                            long d0 = DESC + 16L * (2 * k), d1 = d0 + 16;
                            mem.writeU64(d0, HDR + 16L * k);
                            mem.writeU32(d0 + 8, 8);
                            mem.writeU16(d0 + 12, SplitRing.VIRTQ_DESC_F_NEXT);
                            mem.writeU16(d0 + 14, 2 * k + 1);
                            mem.writeU64(d1, STATUS + k);
                            mem.writeU32(d1 + 8, 1);
                            mem.writeU16(d1 + 12, SplitRing.VIRTQ_DESC_F_WRITE);
                            mem.writeU16(d1 + 14, 0);
                            mem.writeU16(AVAIL + 4 + 2L * (availIdx % SIZE), 2 * k);
                            availIdx = (availIdx + 1) & 0xffff;
                            nextSeq++;
                        }
                        if (availIdx != oldAvail) {
                            mem.writeU16Release(AVAIL + 2, availIdx);
                            VarHandle.fullFence(); // publish avail idx, then read the device's suppression state
                            boolean kick = eventIdx
                                    ? SplitRing.needEvent(mem.readU16(AVAIL_EVENT), availIdx, oldAvail)
                                    : (mem.readU16(USED) & SplitRing.VIRTQ_USED_F_NO_NOTIFY) == 0;
                            if (kick) {
                                kickCount.incrementAndGet();
                                kicks.release();
                            }
                            progress = true;
                        }
                        if (!progress) {
                            // Ask for an interrupt at the next used element, then re-check before sleeping.
                            if (eventIdx) mem.writeU16(USED_EVENT, usedSeen);
                            VarHandle.fullFence();
                            if (mem.readU16Acquire(USED + 2) != usedSeen) continue;
                            if (!calls.tryAcquire(10, TimeUnit.SECONDS)) fail("lost call at " + completed + " completions");
                        }
                    }
                    return null;
                });
                driver.get(120, TimeUnit.SECONDS);
                device.get(120, TimeUnit.SECONDS);
            } finally {
                pool.shutdownNow();
                assertTrue(pool.awaitTermination(30, TimeUnit.SECONDS));
            }
            assertEquals(0, ring.inFlight());
            assertEquals((0xfff0 + TOTAL) & 0xffff, ring.lastAvailIdx());
            assertTrue(kickCount.get() > 0 && callCount.get() > 0);
            System.out.printf("eventIdx=%b: %d chains, %d kicks, %d calls%n", eventIdx, TOTAL, kickCount.get(), callCount.get());
        }
    }
}
