package io.jvhost.vhostuser;

import io.jvhost.vhostuser.FuzzSupport.Seed;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIfSystemProperty;

import java.io.IOException;
import java.nio.ByteBuffer;

import static io.jvhost.vhostuser.FuzzSupport.le;

/**
 * Writes the hand-made seed corpus of this module's fuzz tests into src/test/resources (the fuzzer starts from
 * these; regression runs replay them together with any committed findings). Not part of the build (the class name
 * matches no Surefire pattern): {@code mvn -o -pl vhost-user test -Dtest=FuzzSeedWriter -Djvhost.fuzz.writeSeeds=true}.
 */
@EnabledIfSystemProperty(named = "jvhost.fuzz.writeSeeds", matches = "true")
class FuzzSeedWriter {
    static final int V = Proto.VERSION, NR = Proto.VERSION | Proto.FLAG_NEED_REPLY;
    /** fd kinds of VhostUserMessageFuzzTest. */
    static final int CALL = 0, KICK = 1, RAM = 2, SMALL = 3, BIG = 4, FILE = 5, SOCKET = 6, DEVNULL = 7;
    static final long UADDR = 0x7f00_0000_0000L;
    static final long FEATURES = Proto.F_VERSION_1 | Proto.F_INDIRECT_DESC | Proto.F_EVENT_IDX | Proto.F_PROTOCOL_FEATURES
            | VirtioBlk.F_FLUSH | VirtioBlk.F_SEG_MAX | VirtioBlk.F_BLK_SIZE | VirtioBlk.F_DISCARD | VirtioBlk.F_WRITE_ZEROES;
    static final long PROTOCOL = Proto.PF_MQ | Proto.PF_LOG_SHMFD | Proto.PF_REPLY_ACK | Proto.PF_CONFIG | Proto.PF_RESET_DEVICE
            | Proto.PF_CONFIGURE_MEM_SLOTS | Proto.PF_STATUS;

    static byte[] msg(int req, int flags, byte[] payload) {
        return le(12 + payload.length).putInt(req).putInt(flags).putInt(payload.length).put(payload).array();
    }

    static byte[] u64(long v) {
        return le(8).putLong(v).array();
    }

    static byte[] state(int index, int num) {
        return le(8).putInt(index).putInt(num).array();
    }

    static byte[] region(long gpa, long size, long uaddr, long off) {
        return le(32).putLong(gpa).putLong(size).putLong(uaddr).putLong(off).array();
    }

    static byte[] memReg(long gpa, long size, long uaddr, long off) {
        return le(40).putLong(0).put(region(gpa, size, uaddr, off)).array();
    }

    static byte[] vringAddr(int index, int flags, long desc, long used, long avail, long log) {
        return le(40).putInt(index).putInt(flags).putLong(desc).putLong(used).putLong(avail).putLong(log).array();
    }

    /** Appends one chunk: the wire bytes and the fds (by kind) that travel with them. */
    static Seed chunk(Seed s, byte[] wire, int... kinds) {
        s.u8(kinds.length);
        for (int k : kinds) s.u8(k);
        return s.u16(wire.length).bytes(wire);
    }

    static Seed send(Seed s, int req, int flags, byte[] payload, int... kinds) {
        return chunk(s, msg(req, flags, payload), kinds);
    }

    /** QEMU's realize: features, protocol features (REPLY_ACK from here on), queue count, owner, DRIVER_OK features. */
    static Seed negotiate(Seed s, long features) {
        send(s, Proto.GET_FEATURES, V, new byte[0]);
        send(s, Proto.GET_PROTOCOL_FEATURES, V, new byte[0]);
        send(s, Proto.SET_PROTOCOL_FEATURES, NR, u64(PROTOCOL));
        send(s, Proto.GET_QUEUE_NUM, V, new byte[0]);
        send(s, Proto.SET_OWNER, NR, new byte[0]);
        return send(s, Proto.SET_FEATURES, NR, u64(features));
    }

    /** Queue q of size 256 at RAM offset 0x10000 + q * 0x40000, started and enabled. */
    static Seed ring(Seed s, int q) {
        long base = UADDR + 0x10000 + q * 0x40000L;
        send(s, Proto.SET_VRING_CALL, NR, u64(q), CALL);
        send(s, Proto.SET_VRING_NUM, NR, state(q, 256));
        send(s, Proto.SET_VRING_BASE, NR, state(q, 0));
        send(s, Proto.SET_VRING_ADDR, NR, vringAddr(q, 0, base, base + 0x20000, base + 0x10000, 0));
        send(s, Proto.SET_VRING_KICK, NR, u64(q), KICK);
        return send(s, Proto.SET_VRING_ENABLE, NR, state(q, 1));
    }

    static Seed memTableHandshake() {
        Seed s = negotiate(new Seed(), FEATURES);
        send(s, Proto.SET_MEM_TABLE, NR, le(8 + 32).putInt(1).putInt(0).put(region(0, VhostUserMessageFuzzTest.RAM, UADDR, 0)).array(), RAM);
        ring(s, 0);
        return ring(s, 1);
    }

    @Test
    void messageSeeds() throws IOException {
        String t = "VhostUserMessageFuzzTest", m = "messages";
        Seed s = memTableHandshake();
        send(s, Proto.GET_CONFIG, V, le(12 + 60).putInt(0).putInt(60).putInt(0).array());
        send(s, Proto.SET_STATUS, NR, u64(15));
        send(s, Proto.GET_STATUS, V, new byte[0]);
        send(s, Proto.GET_VRING_BASE, V, state(0, 0));
        FuzzSupport.writeSeed(t, m, "handshake-mem-table", s.toBytes());

        // QEMU 7.2's memory slots: two ADD_MEM_REG over one memfd, rings, stop, a region removed, device reset.
        s = negotiate(new Seed(), FEATURES);
        send(s, Proto.GET_MAX_MEM_SLOTS, V, new byte[0]);
        send(s, Proto.ADD_MEM_REG, NR, memReg(0, 2 << 20, UADDR, 0), RAM);
        send(s, Proto.ADD_MEM_REG, NR, memReg(2 << 20, 2 << 20, UADDR + (2 << 20), 2 << 20), RAM);
        ring(s, 0);
        ring(s, 1);
        send(s, Proto.SET_VRING_ENABLE, NR, state(1, 0));
        send(s, Proto.GET_VRING_BASE, V, state(1, 0));
        send(s, Proto.REM_MEM_REG, NR, memReg(2 << 20, 2 << 20, UADDR + (2 << 20), 2 << 20), RAM);
        send(s, Proto.RESET_DEVICE, NR, new byte[0]);
        FuzzSupport.writeSeed(t, m, "handshake-add-mem-reg", s.toBytes());

        // Migration: a dirty log (64 KiB memfd), its eventfd, LOG_ALL on, a logged used ring, LOG_ALL off.
        s = memTableHandshake();
        send(s, Proto.SET_LOG_BASE, V, le(16).putLong(4096).putLong(0).array(), SMALL);
        send(s, Proto.SET_LOG_FD, NR, new byte[0], CALL);
        send(s, Proto.SET_FEATURES, NR, u64(FEATURES | Proto.F_LOG_ALL));
        long base = UADDR + 0x10000;
        send(s, Proto.SET_VRING_ADDR, NR, vringAddr(0, BlkDevice.VRING_F_LOG, base, base + 0x20000, base + 0x10000, 0x30000));
        send(s, Proto.SET_FEATURES, NR, u64(FEATURES));
        FuzzSupport.writeSeed(t, m, "migration-log", s.toBytes());

        // Hostile framing and fds: a lying size field, a header split over chunks with 4 + 4 + 4 fds, the
        // largest legal payload, a bad version, extra fds on SET_OWNER, wrong fd kinds for memory and kicks.
        s = negotiate(new Seed(), FEATURES);
        byte[] big = msg(Proto.SET_CONFIG, NR, new byte[4096 - 12]);
        chunk(s, java.util.Arrays.copyOf(big, 6), RAM, RAM, CALL, KICK);
        chunk(s, java.util.Arrays.copyOfRange(big, 6, 100), SMALL, BIG, FILE, SOCKET);
        chunk(s, java.util.Arrays.copyOfRange(big, 100, big.length), DEVNULL, CALL, KICK, RAM);
        send(s, Proto.SET_OWNER, NR, new byte[0], CALL, KICK, RAM, FILE);
        send(s, Proto.SET_MEM_TABLE, NR, le(8 + 32).putInt(1).putInt(0).put(region(0, 1 << 20, UADDR, 0)).array(), FILE);
        send(s, Proto.SET_MEM_TABLE, NR, le(8 + 32).putInt(1).putInt(0).put(region(0, 1 << 20, UADDR, 0)).array(), DEVNULL);
        send(s, Proto.ADD_MEM_REG, NR, memReg(0, (1L << 30) + 0x10000, UADDR, 0), BIG);
        send(s, Proto.SET_VRING_KICK, NR, u64(0), SOCKET);
        send(s, Proto.SET_VRING_CALL, NR, u64(0), RAM);
        send(s, Proto.SET_BACKEND_REQ_FD, NR, new byte[0], SOCKET);
        // 68 fds with one message: more than the 8 any message may carry, more than fit the ancillary buffer.
        s.u8(255);
        for (int i = 0; i < 68; i++) s.u8(i % 8);
        byte[] owner = msg(Proto.SET_OWNER, NR, new byte[0]);
        s.u16(owner.length).bytes(owner);
        chunk(s, le(12).putInt(Proto.GET_FEATURES).putInt(2).putInt(0).array()); // bad version: fatal
        FuzzSupport.writeSeed(t, m, "hostile-framing", s.toBytes());

        s = negotiate(new Seed(), FEATURES);
        chunk(s, le(12 + 20).putInt(Proto.SET_VRING_NUM).putInt(NR).putInt(100).array()); // size says 100, 20 follow
        FuzzSupport.writeSeed(t, m, "truncated-payload", s.toBytes());

        // Out of order: rings before any memory, a kick before addresses, addresses that do not translate,
        // overlapping and wrapping regions.
        s = negotiate(new Seed(), FEATURES);
        send(s, Proto.SET_VRING_KICK, NR, u64(0), KICK);
        ring(s, 0);
        send(s, Proto.SET_MEM_TABLE, NR, le(8 + 64).putInt(2).putInt(0).put(region(0, 1 << 20, UADDR, 0))
                .put(region(1 << 19, 1 << 20, UADDR + (4 << 20), 0)).array(), RAM, RAM);
        send(s, Proto.ADD_MEM_REG, NR, memReg(-4096, 8192, UADDR, 0), RAM);
        send(s, Proto.SET_MEM_TABLE, NR, le(8 + 32).putInt(1).putInt(0).put(region(8L << 30, 1 << 20, 0x1000, 0)).array(), RAM);
        send(s, Proto.GET_VRING_BASE, V, state(0, 0));
        FuzzSupport.writeSeed(t, m, "out-of-order", s.toBytes());
    }

    // -------------------------------------------------------------------------------------- BlkRequestFuzzTest

    /**
     * One request of BlkRequestFuzzTest in its simple form: direct or indirect, readable then writable segments,
     * a type from its table, a 16-bit sector, a discard/write-zeroes range of 16-bit sector/num and 8-bit flags.
     */
    static Seed blk(Seed s, boolean indirect, int typeSel, int sector, int rangeSector, int rangeNum, int rangeFlags,
                    int nread, int... lens) {
        s.u8(indirect ? 1 : 0).u8(lens.length - 1).u8(nread).u8(typeSel).u32(0);
        s.u8(0).u16(sector).u8(0).u8(0).u16(rangeSector).u16(rangeNum).u8(rangeFlags);
        for (int l : lens) s.u16(l);
        return s;
    }

    /** A free-form request: each segment has a length and flags (bit 0 writable, bit 1 unmapped, bit 2 empty). */
    static Seed blkFree(Seed s, int typeSel, int sector, int... lenFlags) {
        s.u8(2).u8(lenFlags.length / 2 - 1).u8(0).u8(typeSel).u32(0);
        s.u8(0).u16(sector).u8(0).u8(0).u16(0).u16(0).u8(0);
        for (int i = 0; i < lenFlags.length; i += 2) s.u16(lenFlags[i]).u8(lenFlags[i + 1]);
        return s;
    }

    @Test
    void blkRequestSeeds() throws IOException {
        String t = "BlkRequestFuzzTest", m = "requests";
        Seed s = new Seed().u8(0).u8(7); // lbs 512, 8 requests
        blk(s, false, 0, 8, 0, 0, 0, 1, 16, 4096, 1);      // IN
        blk(s, false, 1, 16, 0, 0, 0, 2, 16, 4096, 1);     // OUT
        blk(s, false, 2, 0, 0, 0, 0, 1, 16, 1);            // FLUSH
        blk(s, false, 3, 0, 0, 0, 0, 1, 16, 20, 1);        // GET_ID
        blk(s, false, 4, 0, 64, 8, 0, 2, 16, 16, 1);       // DISCARD
        blk(s, false, 5, 0, 64, 8, 1, 2, 16, 16, 1);       // WRITE_ZEROES with UNMAP
        blk(s, false, 6, 24, 0, 0, 0, 2, 16, 512, 1);      // OUT_FUA
        blk(s, false, 7, 0, 0, 0, 0, 1, 16, 8, 1);         // GET_LIFETIME: unsupported
        FuzzSupport.writeSeed(t, m, "all-types", s.toBytes());

        s = new Seed().u8(1).u8(3); // lbs 4096, 4 requests
        blk(s, true, 0, 8, 0, 0, 0, 1, 16, 2048, 2048, 1);     // indirect IN of one block
        blk(s, true, 1, 1, 0, 0, 0, 2, 16, 4096, 1);           // OUT at sector 1: misaligned
        blk(s, false, 0, 0xfff8, 0, 0, 0, 1, 16, 4096, 1);     // IN past the end of the device
        blk(s, true, 5, 0, 8, 8, 2, 2, 16, 16, 1);             // WRITE_ZEROES with an unknown flag
        FuzzSupport.writeSeed(t, m, "indirect-4k", s.toBytes());

        s = new Seed().u8(0).u8(1);
        blk(s, false, 0, 0, 0, 0, 0, 1, 16, 512, 1);
        blkFree(s, 0, 0, 16, 0, 512, 1, 16, 0);                 // readable after writable: breaks the ring
        FuzzSupport.writeSeed(t, m, "bad-chain", s.toBytes());

        s = new Seed().u8(0).u8(4);
        blk(s, false, 0, 8, 0, 0, 0, 2, 8, 8, 512, 1);          // header split over two segments
        blk(s, false, 0, 0, 0, 0, 0, 1, 8, 1);                  // header of 8 bytes
        blk(s, false, 4, 0, 0, 8, 0, 3, 16, 16, 16, 1);         // discard with two ranges: unsupported
        blk(s, false, 0, 0, 0, 0, 0, 1, 16);                    // no status buffer
        s.u8(0).u8(2).u8(1).u8(0).u32(0).u8(2).u64(-1L).u8(0).u8(0).u16(0).u16(0).u8(0).u16(16).u16(512).u16(1); // sector 2^64-1
        FuzzSupport.writeSeed(t, m, "bad-headers", s.toBytes());
    }

    // ------------------------------------------------------------------------------------- MemoryTableFuzzTest

    /** A region in its simplest encoding (mode 0): gpa = g << 12, offset 0, the whole fd, uaddr UADDR + (u << 24). */
    static Seed mtRegion(Seed s, int kind, int g, int u) {
        return s.u8(kind).u8(0).u16(g).u8(0).u8(0).u16(u);
    }

    @Test
    void memoryTableSeeds() throws IOException {
        String t = "MemoryTableFuzzTest", m = "memoryTable";
        Seed s = new Seed();
        mtRegion(mtRegion(s.u8(0).u8(2).u8(1), 0, 0, 0), 4, 0x400, 1);         // SET_MEM_TABLE: 2 MiB memfd + 1 MiB file
        s.u8(3).u8(1).u8(0).u16(0x100);                                       // vring 0 in region 0, started
        s.u8(5);                                                              // kick it
        s.u8(1).u8(1).u8(1).u8(2).u8(0).u8(0).u8(0).u16(2);                   // ADD_MEM_REG 64 KiB adjacent to region 0
        mtRegion(s.u8(1).u8(1), 3, 0x1000, 3);                                // ADD_MEM_REG the sparse 1 GiB memfd
        mtRegion(s.u8(0).u8(1).u8(1), 0, 0, 0);                               // SET_MEM_TABLE replacing all under the ring
        s.u8(4);                                                              // GET_VRING_BASE: ring stopped
        s.u8(2).u8(1).u8(0).u32(0);                                           // REM_MEM_REG region 0
        s.u8(6);                                                              // GET_MAX_MEM_SLOTS
        FuzzSupport.writeSeed(t, m, "tables-under-a-running-ring", s.toBytes());

        s = new Seed();
        mtRegion(mtRegion(s.u8(0).u8(2).u8(0), 0, 0, 0), 1, 0x400, 1);        // 2 regions, 1 fd
        mtRegion(mtRegion(s.u8(0).u8(2).u8(1), 0, 0, 0), 0, 0x100, 1);        // overlapping gpa
        s.u8(0).u8(9).u8(1);                                                  // 9 regions
        for (int i = 0; i < 9; i++) mtRegion(s, 1, 0x100 * i, i);
        s.u8(0).u8(0).u8(1);                                                  // 0 regions
        mtRegion(s.u8(0).u8(1).u8(1), 5, 0, 0);                               // an eventfd as RAM
        mtRegion(s.u8(0).u8(1).u8(1), 2, 0, 0);                               // an empty memfd
        s.u8(1).u8(1).u8(0).u8(1).u16(1).u8(0).u8(0).u16(0);                  // ADD_MEM_REG at gpa 2^64-4096: wraps
        s.u8(1).u8(1).u8(0).u8(12).u16(0).u32(0x180000).u16(0x100).u16(0);  // offset + size past the end of the fd
        mtRegion(s.u8(1).u8(2), 0, 0, 0);                                     // two fds
        mtRegion(s.u8(1).u8(0), 0, 0, 0);                                     // no fd
        mtRegion(s.u8(2), 0, 0, 0);                                           // REM_MEM_REG of nothing
        FuzzSupport.writeSeed(t, m, "refusals", s.toBytes());
    }
}
