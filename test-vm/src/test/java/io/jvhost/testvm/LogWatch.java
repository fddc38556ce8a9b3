package io.jvhost.testvm;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.ClosedWatchServiceException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.StandardWatchEventKinds;
import java.nio.file.WatchEvent;
import java.nio.file.WatchKey;
import java.nio.file.WatchService;
import java.time.Duration;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Waits for a line to appear in a log file that another process appends to (a back-end's log),
 * woken by inotify rather than by polling.
 */
final class LogWatch {
    private LogWatch() {
    }

    /** The current length of {@code file} (0 if it does not exist): a starting point for {@link #awaitLine}. */
    static long size(Path file) throws IOException {
        try {
            return Files.size(file);
        } catch (NoSuchFileException e) {
            return 0;
        }
    }

    /**
     * Waits until a complete line (newline-terminated) that starts at or after byte {@code from} of
     * {@code file} contains a match for {@code pattern}; returns the match, or empty on timeout.
     */
    static Optional<Matcher> awaitLine(Path file, long from, Pattern pattern, Duration timeout)
            throws IOException, InterruptedException {
        Path dir = file.toAbsolutePath().getParent();
        Path name = file.getFileName();
        long deadline = System.nanoTime() + timeout.toNanos();
        // Registered before the first scan, so that a line written in between still wakes us.
        try (WatchService watch = dir.getFileSystem().newWatchService()) {
            dir.register(watch, StandardWatchEventKinds.ENTRY_CREATE, StandardWatchEventKinds.ENTRY_MODIFY);
            while (true) {
                Optional<Matcher> m = scan(file, from, pattern);
                if (m.isPresent()) {
                    return m;
                }
                boolean ours = false;
                while (!ours) {
                    long left = deadline - System.nanoTime();
                    if (left <= 0) {
                        return Optional.empty();
                    }
                    WatchKey key;
                    try {
                        key = watch.poll(left, TimeUnit.NANOSECONDS);
                    } catch (ClosedWatchServiceException e) {
                        return Optional.empty();
                    }
                    if (key == null) {
                        continue;
                    }
                    for (WatchEvent<?> ev : key.pollEvents()) {
                        // other logs in the same directory (guest consoles) change all the time
                        ours |= ev.kind() == StandardWatchEventKinds.OVERFLOW || name.equals(ev.context());
                    }
                    key.reset();
                }
            }
        }
    }

    private static Optional<Matcher> scan(Path file, long from, Pattern pattern) throws IOException {
        String text;
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size <= from) {
                return Optional.empty();
            }
            // back-end logs of one test are small; cap anyway so a runaway log cannot exhaust the heap
            int len = (int) Math.min(size - from, 64L << 20);
            ByteBuffer buf = ByteBuffer.allocate(len);
            while (buf.hasRemaining() && ch.read(buf, from + buf.position()) > 0) {
                // keep reading
            }
            text = new String(buf.array(), 0, buf.position(), StandardCharsets.ISO_8859_1);
        } catch (NoSuchFileException e) {
            return Optional.empty();
        }
        int end = text.lastIndexOf('\n');
        if (end < 0) {
            return Optional.empty();
        }
        for (String line : text.substring(0, end).split("\n", -1)) {
            Matcher m = pattern.matcher(line);
            if (m.find()) {
                return Optional.of(m);
            }
        }
        return Optional.empty();
    }
}
