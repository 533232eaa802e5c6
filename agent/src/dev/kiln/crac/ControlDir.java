package dev.kiln.crac;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The control directory shared with kiln (PROTOCOL.md). Every file is written whole to a hidden
 * temporary name and renamed into place, and no file or directory stays open but kiln's wake
 * FIFO, which kiln makes again in every copy's directory before CRIU restores it.
 */
final class ControlDir {
    static final String AGENT_READY = "agent.ready";
    static final String CHECKPOINT_REQUEST = "checkpoint.request";
    static final String CHECKPOINT_APP_REQUEST = "checkpoint.app-request";
    static final String CHECKPOINT_READY = "checkpoint.ready";
    static final String CHECKPOINT_FAILED = "checkpoint.failed";
    static final String RESTORE_REQUEST = "restore.request";
    static final String RESTORE_DONE = "restore.done";
    static final String RESTORE_FAILED = "restore.failed";
    static final String IO_STACKS = "io-stacks.json";
    static final String TRIM_REQUEST = "trim.request";
    static final String TRIM_DONE = "trim.done";
    /** The FIFO kiln writes a byte into to wake the agent (made by kiln; held open by the JVM). */
    static final String WAKE = "wake";

    final Path dir;

    ControlDir(Path dir) {
        this.dir = dir;
    }

    boolean exists(String name) {
        return Files.exists(dir.resolve(name));
    }

    void write(String name, String content) throws IOException {
        Path tmp = dir.resolve("." + name + ".tmp-" + ProcessHandle.current().pid());
        Files.write(tmp, content.getBytes(StandardCharsets.UTF_8));
        try {
            Files.move(tmp, dir.resolve(name), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(tmp, dir.resolve(name), StandardCopyOption.REPLACE_EXISTING);
        }
    }

    /** Reads a key=value file; null when it does not exist. */
    Map<String, String> readProperties(String name) throws IOException {
        String text;
        try {
            text = Files.readString(dir.resolve(name), StandardCharsets.UTF_8);
        } catch (NoSuchFileException e) {
            return null;
        }
        Map<String, String> map = new LinkedHashMap<>();
        for (String line : text.split("\n")) {
            line = line.strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            int eq = line.indexOf('=');
            if (eq > 0) {
                map.put(line.substring(0, eq).strip(), line.substring(eq + 1).strip());
            }
        }
        return map;
    }

    /**
     * Removes a file; true when it was there. java.io.File, not Files.deleteIfExists: that builds
     * an exception for every missing file, and most files removed here are missing.
     */
    boolean remove(String name) {
        File file = dir.resolve(name).toFile();
        if (file.delete()) {
            return true;
        }
        if (file.exists()) {
            Log.warn("cannot remove " + file);
        }
        return false;
    }

    static String properties(Map<String, ?> map) {
        StringBuilder sb = new StringBuilder();
        for (Map.Entry<String, ?> e : map.entrySet()) {
            sb.append(e.getKey()).append('=').append(String.valueOf(e.getValue()).replace('\n', ' ')).append('\n');
        }
        return sb.toString();
    }
}
