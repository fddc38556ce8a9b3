package io.jvhost.testvm;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.List;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/** Host-side inspection of disk images written by guests. */
public final class HostDisk {
    public static final long MIB = 1024 * 1024;

    private HostDisk() {
    }

    /** Creates (or truncates) a sparse raw image of {@code bytes}. */
    public static Path createSparse(Path image, long bytes) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(0);
            f.setLength(bytes);
        }
        return image;
    }

    public static String sha256(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            return sha256(file, 0, ch.size());
        }
    }

    /** SHA-256 (lower-case hex) of {@code length} bytes at {@code offset}; fails if the file is shorter. */
    public static String sha256(Path file, long offset, long length) throws IOException {
        MessageDigest md;
        try {
            md = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new AssertionError(e);
        }
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            ByteBuffer buf = ByteBuffer.allocate((int) MIB);
            long pos = offset;
            long end = offset + length;
            while (pos < end) {
                buf.clear().limit((int) Math.min(buf.capacity(), end - pos));
                int n = ch.read(buf, pos);
                if (n < 0) {
                    throw new IOException(file + " ends at " + pos + ", before " + end);
                }
                buf.flip();
                md.update(buf);
                pos += n;
            }
        }
        return HexFormat.of().formatHex(md.digest());
    }

    public static byte[] read(Path file, long offset, int length) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            ByteBuffer buf = ByteBuffer.allocate(length);
            while (buf.hasRemaining()) {
                if (ch.read(buf, offset + buf.position()) < 0) {
                    throw new IOException(file + " is shorter than " + (offset + length));
                }
            }
            return buf.array();
        }
    }

    /** The offset of the first non-zero byte in [offset, offset+length), if any. */
    public static OptionalLong firstNonZero(Path file, long offset, long length) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            ByteBuffer buf = ByteBuffer.allocate((int) MIB);
            long pos = offset;
            long end = offset + length;
            while (pos < end) {
                buf.clear().limit((int) Math.min(buf.capacity(), end - pos));
                int n = ch.read(buf, pos);
                if (n < 0) {
                    throw new IOException(file + " ends at " + pos);
                }
                for (int i = 0; i < n; i++) {
                    if (buf.get(i) != 0) {
                        return OptionalLong.of(pos + i);
                    }
                }
                pos += n;
            }
        }
        return OptionalLong.empty();
    }

    /** True if the ext2/3/4 superblock magic 0xEF53 is at byte 1080 of {@code file}. */
    public static boolean hasExtMagic(Path file) throws IOException {
        byte[] b = read(file, 1080, 2);
        return (b[0] & 0xff) == 0x53 && (b[1] & 0xff) == 0xef;
    }

    /** debugfs from e2fsprogs, if installed. */
    public static Optional<Path> debugfs() {
        return TestVm.findExecutable("debugfs", "/usr/sbin", "/sbin");
    }

    /** Reads a file out of an ext filesystem image with {@code debugfs -R 'cat PATH'} (read-only). */
    public static byte[] debugfsCat(Path debugfs, Path image, String path) throws IOException, InterruptedException {
        Process p = TestVm.track(new ProcessBuilder(List.of(debugfs.toString(), "-R", "cat " + path, image.toString()))
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .start());
        CompletableFuture<byte[]> err = CompletableFuture.supplyAsync(() -> readAll(p.getErrorStream()));
        byte[] out = readAll(p.getInputStream());
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new IOException("debugfs did not finish within 60 s");
        }
        String errText = new String(err.join());
        if (p.exitValue() != 0 || errText.contains("File not found")) {
            throw new IOException("debugfs cat " + path + " failed (" + p.exitValue() + "): " + errText);
        }
        return out;
    }

    private static byte[] readAll(InputStream in) {
        try (in) {
            ByteArrayOutputStream bos = new ByteArrayOutputStream();
            in.transferTo(bos);
            return bos.toByteArray();
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }
}
