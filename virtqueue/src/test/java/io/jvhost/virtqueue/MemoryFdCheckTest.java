package io.jvhost.virtqueue;

import io.jvhost.iothread.sys.Libc;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.*;

/** Guest RAM is only accepted from fds whose pages cannot block us (memfd, tmpfs, hugetlbfs, local disks). */
class MemoryFdCheckTest {
    @Test
    void memfdAndShmFilesAreAccepted() throws Exception {
        int memfd = Libc.memfd_create("check", Libc.MFD_CLOEXEC);
        try {
            assertEquals(0, Libc.ftruncate(memfd, 1 << 20));
            MemoryRegion.map(memfd, 0, 1 << 20, 0x1000_0000L, 0).close();
        } finally {
            Libc.close(memfd);
        }
        Path shm = Files.createTempFile(Path.of("/dev/shm"), "jvhost-check", ".ram");
        try (RandomAccessFile f = new RandomAccessFile(shm.toFile(), "rw")) {
            f.setLength(1 << 20);
            int fd = Libc.open(shm.toString(), Libc.O_RDWR | Libc.O_CLOEXEC, 0);
            try {
                MemoryRegion.map(fd, 0, 1 << 20, 0x1000_0000L, 0).close();
            } finally {
                Libc.close(fd);
            }
        } finally {
            Files.delete(shm);
        }
    }

    @Test
    void anEventfdIsNotGuestMemory() {
        int efd = Libc.eventfd(0, Libc.EFD_CLOEXEC);
        try {
            IOException e = assertThrows(IOException.class, () -> MemoryRegion.map(efd, 0, 4096, 0x1000_0000L, 0));
            assertTrue(e.getMessage().contains("refused") || e.getMessage().contains("cannot tell the filesystem"), e.getMessage());
        } finally {
            Libc.close(efd);
        }
    }
}
