package io.jvhost.daemon.qmp;

import com.fasterxml.jackson.databind.JsonNode;

import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.Executor;

/**
 * One QMP command: its argument schema, where it runs and what it does.
 *
 * @param executor where the handler runs: the daemon's main loop for anything that touches exports, nodes or
 *                 iothreads (their one owner); null runs it on the QMP loop (stateless queries only)
 * @param afterReply runs on the QMP loop once the success reply has been written (quit); null for none
 */
public record QmpCommand(String name, Qapi.Type arguments, Executor executor, Handler handler, Runnable afterReply) {

    /** The command's work. Its argument is the flat key/value form of the checked arguments (see {@link Qapi}). */
    @FunctionalInterface
    public interface Handler {
        /** Completes with the {@code return} value, or exceptionally ({@link QmpException} for a QMP error). */
        CompletionStage<? extends JsonNode> run(Map<String, String> args) throws Exception;
    }

    /** A handler that has its answer at once. */
    @FunctionalInterface
    public interface SyncHandler {
        JsonNode run(Map<String, String> args) throws Exception;
    }

    public static QmpCommand sync(String name, Qapi.Type arguments, Executor executor, SyncHandler h) {
        return new QmpCommand(name, arguments, executor, args -> CompletableFuture.completedFuture(h.run(args)), null);
    }

    public static QmpCommand async(String name, Qapi.Type arguments, Executor executor, Handler h) {
        return new QmpCommand(name, arguments, executor, h, null);
    }

    public QmpCommand withAfterReply(Runnable r) {
        return new QmpCommand(name, arguments, executor, handler, r);
    }
}
