package io.jvhost.block.job;

import io.jvhost.block.BlockNodes;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;

/** The registry of block jobs by id (query-jobs), plus listeners that see every job's events. */
public final class Jobs {
    private final Map<String, BlockJob> jobs = new LinkedHashMap<>();
    final CopyOnWriteArrayList<JobListener> listeners = new CopyOnWriteArrayList<>();

    public synchronized BlockJob get(String id) {
        return jobs.get(id);
    }

    /** A snapshot, in creation order. */
    public synchronized List<BlockJob> list() {
        return List.copyOf(jobs.values());
    }

    public void addListener(JobListener l) {
        listeners.add(l);
    }

    public void removeListener(JobListener l) {
        listeners.remove(l);
    }

    synchronized void register(BlockJob j) {
        if (!BlockNodes.isWellFormed(j.id())) throw new IllegalArgumentException("invalid job id '" + j.id() + "'");
        if (jobs.containsKey(j.id())) throw new IllegalArgumentException("job id '" + j.id() + "' is in use");
        jobs.put(j.id(), j);
    }

    synchronized void unregister(BlockJob j) {
        jobs.remove(j.id(), j);
    }
}
