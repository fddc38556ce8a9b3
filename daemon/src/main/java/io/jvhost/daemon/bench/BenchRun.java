package io.jvhost.daemon.bench;

import io.jvhost.iothread.sys.Libc;

import java.io.IOException;
import java.io.PrintStream;
import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

/**
 * One benchmark run: connect, negotiate like QEMU 7.2's vhost-user-blk (virtio 1.x, split rings, the blk feature
 * bits a Linux guest acks, EVENT_IDX and INDIRECT_DESC as asked; REPLY_ACK, MQ, CONFIG and CONFIGURE_MEM_SLOTS if
 * offered: ADD_MEM_REG then, else SET_MEM_TABLE), lay out guest RAM, start one thread per queue, print progress
 * once a second, sample CPU and RSS at the edges of the measured window, stop the rings and collect the numbers.
 *
 * <p>The calling thread is the control thread. It doubles as a watchdog: if the queues have not drained
 * --drain-timeout after the end of the window, or a queue failed, it wakes every queue thread (a write
 * to its call eventfd) and the run ends with a {@link BenchException}.
 */
public final class BenchRun {
    static final int REPLY_TIMEOUT_MS = 10_000;
    static final int CONFIG_SIZE = 60; // what QEMU 7.2 asks for (no secure-erase fields); QSD 7.2 answers it

    // Virtio feature bits.
    static final int F_INDIRECT_DESC = 28, F_EVENT_IDX = 29, F_PROTOCOL_FEATURES = 30, F_VERSION_1 = 32;
    static final int BLK_F_SIZE_MAX = 1, BLK_F_SEG_MAX = 2, BLK_F_GEOMETRY = 4, BLK_F_RO = 5, BLK_F_BLK_SIZE = 6,
            BLK_F_FLUSH = 9, BLK_F_TOPOLOGY = 10, BLK_F_CONFIG_WCE = 11, BLK_F_MQ = 12, BLK_F_DISCARD = 13,
            BLK_F_WRITE_ZEROES = 14;
    /**
     * What a Linux guest acks of a vhost-user-blk device (QEMU's user_feature_bits, split ring). FLUSH matters:
     * without it a back-end must write through (jvhost does), which would not be the guest's normal case.
     */
    static final long DRIVER_FEATURES = bit(BLK_F_SIZE_MAX) | bit(BLK_F_SEG_MAX) | bit(BLK_F_GEOMETRY) | bit(BLK_F_RO)
            | bit(BLK_F_BLK_SIZE) | bit(BLK_F_FLUSH) | bit(BLK_F_TOPOLOGY) | bit(BLK_F_CONFIG_WCE) | bit(BLK_F_MQ)
            | bit(BLK_F_DISCARD) | bit(BLK_F_WRITE_ZEROES) | bit(F_VERSION_1);
    static final long DRIVER_PROTOCOL_FEATURES = bit(VhostUserClient.PF_MQ) | bit(VhostUserClient.PF_REPLY_ACK)
            | bit(VhostUserClient.PF_CONFIG) | bit(VhostUserClient.PF_CONFIGURE_MEM_SLOTS);

    static long bit(int n) {
        return 1L << n;
    }

    private final BenchOptions o;
    private final PrintStream progress;
    private volatile boolean aborted;
    private final AtomicReference<String> failure = new AtomicReference<>();
    private volatile Throwable failureCause;
    private long windowStart, windowEnd;   // set before the queue threads start (start latch orders it)
    private CountDownLatch done;
    private BenchQueue[] queues = new BenchQueue[0];

    private BenchRun(BenchOptions o, PrintStream progress) {
        this.o = o;
        this.progress = progress;
    }

    /**
     * Runs the benchmark described by {@code o}. Progress lines go to {@code progress} (null: none).
     *
     * @throws BenchException when the back-end misbehaves or the run cannot be set up
     */
    public static BenchResult run(BenchOptions o, PrintStream progress) throws IOException, InterruptedException {
        return new BenchRun(o, o.progress() ? progress : null).execute();
    }

    long windowStart() { return windowStart; }
    long windowEnd() { return windowEnd; }
    boolean aborted() { return aborted; }
    void queueDone() { done.countDown(); }

    /** Records the first failure, stops every queue thread. */
    void fail(String msg, Throwable cause) {
        if (failure.compareAndSet(null, msg)) failureCause = cause;
        aborted = true;
        for (BenchQueue q : queues) q.wake();
    }

    /** What the handshake found out. */
    record Negotiated(long offeredFeatures, long features, long offeredProtocolFeatures, long protocolFeatures,
                      long maxQueues, long capacityBytes, int blockSize, String memoryMessage, boolean eventIdx) {}

    private BenchResult execute() throws IOException, InterruptedException {
        List<Integer> fds = new ArrayList<>();
        GuestRam ram = null;
        try (VhostUserClient c = VhostUserClient.connect(o.socket(), REPLY_TIMEOUT_MS)) {
            // ---- realize (QEMU 7.2 order)
            long offered = c.getFeatures();
            boolean pf = (offered & bit(F_PROTOCOL_FEATURES)) != 0;
            long offeredProto = 0, proto = 0;
            if (pf) {
                offeredProto = c.getProtocolFeatures();
                proto = offeredProto & DRIVER_PROTOCOL_FEATURES;
                c.setProtocolFeatures(proto);
                c.useReplyAck((proto & bit(VhostUserClient.PF_REPLY_ACK)) != 0);
            }
            long maxQueues = 1;
            if ((proto & bit(VhostUserClient.PF_MQ)) != 0) maxQueues = c.getQueueNum();
            if (o.queues() > maxQueues) {
                throw new BenchException("the back-end serves " + maxQueues + " queue(s), --queues " + o.queues() + " asked");
            }
            if ((proto & bit(VhostUserClient.PF_CONFIGURE_MEM_SLOTS)) != 0 && c.getMaxMemSlots() < 1) {
                throw new BenchException("the back-end offers CONFIGURE_MEM_SLOTS with no slot");
            }
            c.setOwner();
            if ((offered & bit(F_VERSION_1)) == 0) throw new BenchException("the back-end does not offer VIRTIO_F_VERSION_1 (legacy devices are not supported)");
            long capacity = -1;
            int blk = 512;
            if ((proto & bit(VhostUserClient.PF_CONFIG)) != 0) {
                ByteBuffer cfg = ByteBuffer.wrap(c.getConfig(CONFIG_SIZE)).order(ByteOrder.LITTLE_ENDIAN);
                long sectors = cfg.getLong(0);
                capacity = sectors > Long.MAX_VALUE / 512 || sectors < 0 ? Long.MAX_VALUE : sectors * 512;
                if ((offered & bit(BLK_F_BLK_SIZE)) != 0) {
                    int b = cfg.getInt(20);
                    if (b >= 512 && b <= (1 << 16) && Integer.bitCount(b) == 1) blk = b;
                }
            }

            // ---- features (DRIVER_OK)
            long want = DRIVER_FEATURES;
            if (o.eventIdx() != BenchOptions.Toggle.OFF) want |= bit(F_EVENT_IDX);
            if (o.indirect()) want |= bit(F_INDIRECT_DESC);
            long features = offered & want;
            if (pf) features |= bit(F_PROTOCOL_FEATURES);
            boolean evIdx = (features & bit(F_EVENT_IDX)) != 0;
            if (o.eventIdx() == BenchOptions.Toggle.ON && !evIdx) throw new BenchException("--event-idx on: the back-end does not offer EVENT_IDX");
            if (o.indirect() && (features & bit(F_INDIRECT_DESC)) == 0) throw new BenchException("--indirect on: the back-end does not offer INDIRECT_DESC");
            if ((features & bit(BLK_F_RO)) != 0 && (o.rw().writes())) throw new BenchException("the device is read-only; --rw " + o.rw().fioName() + " writes");
            long region = o.size();
            if (region == 0) {
                if (capacity < 0) throw new BenchException("the back-end offers no CONFIG (capacity unknown): give --size");
                region = capacity;
            } else if (capacity >= 0 && region > capacity) {
                throw new BenchException("--size " + region + " exceeds the device capacity of " + capacity + " bytes");
            }
            if (region < o.blockSize()) throw new BenchException("the device (" + region + " bytes) is smaller than --bs " + o.blockSize());
            if (o.blockSize() % blk != 0) throw new BenchException("--bs " + o.blockSize() + " is not a multiple of the device's logical block size " + blk);
            region -= region % o.blockSize();

            // ---- guest RAM and rings
            ram = GuestRam.create(BenchQueue.ramNeeded(o) * o.queues());
            queues = new BenchQueue[o.queues()];
            for (int i = 0; i < o.queues(); i++) {
                int kick = Libc.eventfd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
                if (kick < 0) throw new BenchException("eventfd failed: errno " + Libc.errno());
                fds.add(kick);
                int call = Libc.eventfd(0, Libc.EFD_CLOEXEC); // blocking: the queue thread sleeps in read(2)
                if (call < 0) throw new BenchException("eventfd failed: errno " + Libc.errno());
                fds.add(call);
                queues[i] = new BenchQueue(this, ram, i, o, region, evIdx, kick, call);
            }
            ram.prefault();

            c.setFeatures(features);
            for (BenchQueue q : queues) c.setVringCall(q.index, q.callFd);
            String memMsg;
            if ((proto & bit(VhostUserClient.PF_CONFIGURE_MEM_SLOTS)) != 0) {
                c.addMemReg(ram);
                memMsg = "ADD_MEM_REG";
            } else {
                c.setMemTable(ram);
                memMsg = "SET_MEM_TABLE";
            }
            for (BenchQueue q : queues) {
                c.setVringNum(q.index, q.queueSize);
                c.setVringBase(q.index, 0);
                c.setVringAddr(q.index, ram.uaddr + q.descGpa, ram.uaddr + q.usedGpa, ram.uaddr + q.availGpa);
                c.setVringKick(q.index, q.kickFd);
            }
            if (pf) for (BenchQueue q : queues) c.setVringEnable(q.index, true);
            if (o.waitMode() == BenchOptions.Wait.EVENTFD) for (BenchQueue q : queues) q.makeCallFdBlocking();
            Negotiated neg = new Negotiated(offered, features, offeredProto, proto, maxQueues, capacity, blk, memMsg, evIdx);

            BenchResult r = drive(neg, region);

            // ---- stop like QEMU: disable, then GET_VRING_BASE; every request was reaped, so all must be consumed
            int[] bases = new int[queues.length];
            for (BenchQueue q : queues) if (pf) c.setVringEnable(q.index, false);
            for (BenchQueue q : queues) {
                bases[q.index] = c.getVringBase(q.index);
                if (bases[q.index] != q.availIndex()) {
                    throw new BenchException("queue " + q.index + ": GET_VRING_BASE returned " + bases[q.index]
                            + ", but all " + q.availIndex() + " requests were completed");
                }
            }
            return r;
        } finally {
            // After the socket closed (try-with-resources above): the back-end may still hold requests of an
            // aborted run, but it writes through its own mapping, so unmapping ours is safe.
            for (int fd : fds) Libc.close(fd);
            if (ram != null) ram.close();
        }
    }

    /** Starts the queue threads, waits for them (progress, samples, watchdog) and builds the result. */
    private BenchResult drive(Negotiated neg, long region) throws IOException, InterruptedException {
        CountDownLatch start = new CountDownLatch(1);
        done = new CountDownLatch(queues.length);
        List<Thread> threads = new ArrayList<>();
        for (BenchQueue q : queues) {
            Thread t = new Thread(() -> {
                try {
                    start.await();
                } catch (InterruptedException e) {
                    fail("queue " + q.index + " interrupted", e);
                    queueDone();
                    return;
                }
                q.run();
            }, "bench-q" + q.index);
            t.setDaemon(true); // a wedged back-end must not keep the JVM alive after the watchdog gave up
            threads.add(t);
            t.start();
        }
        long t0 = System.nanoTime();
        windowStart = t0 + o.rampNs();
        windowEnd = windowStart + o.timeNs();
        start.countDown();

        Sample before = null, after = null;
        long rssMax = -1, rssSum = 0, rssN = 0;
        long nextTick = t0 + 1_000_000_000L, lastTickTime = t0, lastTickIos = 0;
        boolean console = System.console() != null;
        while (true) {
            long now = System.nanoTime();
            long wake = nextTick;
            if (before == null) wake = Math.min(wake, windowStart);
            if (after == null) wake = Math.min(wake, windowEnd);
            wake = Math.min(wake, windowEnd + o.drainTimeoutNs());
            boolean finished = done.await(Math.max(0, wake - now), TimeUnit.NANOSECONDS);
            now = System.nanoTime();
            if (before == null && (now - windowStart >= 0 || finished)) before = Sample.take(o.targetPid());
            if (after == null && (now - windowEnd >= 0 || finished)) after = Sample.take(o.targetPid());
            if (finished) break;
            if (now - nextTick >= 0) {
                long ios = completedAll();
                double rate = (ios - lastTickIos) * 1e9 / Math.max(1, now - lastTickTime);
                lastTickIos = ios;
                lastTickTime = now;
                nextTick += 1_000_000_000L;
                boolean inWindow = now - windowStart >= 0 && now - windowEnd < 0;
                if (inWindow && o.targetPid() != 0) {
                    long rss = ProcStat.statusBytes(o.targetPid(), "VmRSS");
                    if (rss >= 0) {
                        rssMax = Math.max(rssMax, rss);
                        rssSum += rss;
                        rssN++;
                    }
                }
                if (progress != null) printProgress(console, now, t0, rate);
            }
            if (aborted) {
                // A queue failed: its siblings were woken by fail(); give them a moment to leave, then report.
                done.await(5, TimeUnit.SECONDS);
                break;
            }
            if (now - windowEnd - o.drainTimeoutNs() >= 0) {
                int stuck = 0;
                for (BenchQueue q : queues) stuck += q.inFlightCount();
                fail(String.format(Locale.ROOT, "%d request(s) still in flight %.1f s after the end of the run (back-end stuck?)",
                        stuck, o.drainTimeoutNs() / 1e9), null);
                done.await(5, TimeUnit.SECONDS);
                break;
            }
        }
        if (progress != null && console) progress.print("\r\033[K");
        for (Thread t : threads) t.join(5_000);
        if (failure.get() != null) throw new BenchException(failure.get(), failureCause);
        for (Thread t : threads) {
            if (t.isAlive()) throw new BenchException(t.getName() + " did not end");
        }
        // The samples at both edges of the window count too, so a run shorter than a second still has RSS figures.
        for (Sample s : new Sample[] {before, after}) {
            if (s != null && s.targetRss >= 0) {
                rssMax = Math.max(rssMax, s.targetRss);
                rssSum += s.targetRss;
                rssN++;
            }
        }
        return BenchResult.build(o, neg, region, queues, before, after, windowEnd - windowStart, rssMax,
                rssN > 0 ? rssSum / rssN : -1);
    }

    private long completedAll() {
        long n = 0;
        for (BenchQueue q : queues) n += q.completed.get();
        return n;
    }

    private void printProgress(boolean console, long now, long t0, double iops) {
        String phase;
        if (now - windowStart < 0) {
            phase = String.format(Locale.ROOT, "ramp %d/%ds", (now - t0) / 1_000_000_000L, o.rampNs() / 1_000_000_000L);
        } else if (now - windowEnd < 0) {
            phase = String.format(Locale.ROOT, "run %d/%ds", (now - windowStart) / 1_000_000_000L, (o.timeNs() + 999_999_999L) / 1_000_000_000L);
        } else {
            phase = "drain";
        }
        double mib = iops * o.blockSize() / (1024.0 * 1024.0);
        String line = String.format(Locale.ROOT, "jvhost-bench: [%s] %s IOPS, %.1f MiB/s", phase, BenchResult.si(iops), mib);
        if (console) progress.print("\r\033[K" + line);
        else progress.println(line);
        progress.flush();
    }

    /** Process-wide numbers taken at the edges of the measured window. */
    static final class Sample {
        final long timeNs = System.nanoTime();
        long selfCpuNs, targetCpuNs, targetRss, gcCount, gcTimeMs;
        long systemBusyNs = -1, systemStealNs = -1;

        static Sample take(long targetPid) {
            Sample s = new Sample();
            s.selfCpuNs = ProcStat.cpuNanos(0);
            s.targetCpuNs = targetPid != 0 ? ProcStat.cpuNanos(targetPid) : -1;
            s.targetRss = targetPid != 0 ? ProcStat.statusBytes(targetPid, "VmRSS") : -1;
            long[] sys = ProcStat.systemCpuNanos();
            if (sys != null) {
                s.systemBusyNs = sys[0];
                s.systemStealNs = sys[1];
            }
            for (GarbageCollectorMXBean gc : ManagementFactory.getGarbageCollectorMXBeans()) {
                s.gcCount += Math.max(0, gc.getCollectionCount());
                s.gcTimeMs += Math.max(0, gc.getCollectionTime());
            }
            return s;
        }
    }
}
