package io.jvhost.iothread;

import io.netty.channel.IoEventLoop;
import io.netty.channel.IoRegistration;
import io.netty.channel.uring.IoUringIoHandle;
import io.netty.util.internal.PlatformDependent;

import java.nio.ByteBuffer;

/**
 * The io_uring of an io_uring-backed {@link AioContext} ({@link AioContext#uring}), for raw SQEs such as the file
 * driver's reads and writes into guest memory. Register an {@link IoUringIoHandle}, then submit
 * {@code IoUringIoOps} through its registration <b>from the context's thread only</b> (netty hops any other
 * caller through a task and a wake-up per SQE). CQEs come back on the same thread.
 *
 * <p>Batching comes for free: netty only queues SQEs in the shared submission ring and hands them to the kernel
 * once per loop pass (in {@code IoUringIoHandler.run}, or when the ring is full), so every request submitted
 * while one batch of kicks is processed goes in with one {@code io_uring_enter} (QEMU's plug/unplug).
 *
 * <p>Use small userData values (slot indexes, {@code (short) userData == userData}): those travel inside
 * netty's packed CQE user_data; larger ones make netty allocate a pending-operation entry per SQE.
 */
public final class AioUring {
    private final AioContext ctx;
    private final IoEventLoop loop;

    AioUring(AioContext ctx, IoEventLoop loop) {
        this.ctx = ctx;
        this.loop = loop;
    }

    public AioContext context() {
        return ctx;
    }

    /**
     * Registers a handle on the context's loop (any thread; immediate on the context's thread). The handle's
     * {@code close()} runs when the loop shuts down; cancel the registration to drop it earlier (netty keeps
     * delivering the CQEs of SQEs still in flight until the last one came back).
     */
    public IoRegistration register(IoUringIoHandle handle) {
        return AioContext.join(loop.register(handle));
    }

    /**
     * The native address of byte 0 of a direct buffer (for SQEs that point into it), without allocating. Through
     * netty's PlatformDependent, which works on Java 17 (Unsafe) and 25 (without it).
     */
    public static long address(ByteBuffer directBuffer) {
        if (!directBuffer.isDirect()) throw new IllegalArgumentException("not a direct buffer");
        return PlatformDependent.directBufferAddress(directBuffer);
    }
}
