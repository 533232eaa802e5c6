package dev.kiln.crac;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import jdk.jfr.Recording;
import jdk.jfr.consumer.RecordedEvent;
import jdk.jfr.consumer.RecordedFrame;
import jdk.jfr.consumer.RecordedStackTrace;
import jdk.jfr.consumer.RecordingFile;

/**
 * Which code opened the sockets and files a checkpoint would copy (kiln bake --preflight, which
 * sets {@code -Dkiln.agent.io-stacks=true}): a JFR recording, started at premain, of every socket
 * read and write and every file write with its stack trace. At the checkpoint the recording is
 * dumped and, per remote address:port and per file path, the stack of the EARLIEST event is kept:
 * the first write on a JDBC socket is the startup packet, sent by the code that opened it. It is
 * the stack of the first I/O, not of the open() itself (CRaC's jdk.crac.collect-fd-stacktraces
 * records the stack at the open); a socket or file never read or written has none.
 *
 * <p>Public JDK API only (jdk.jfr), on JDK 17 and 25. Only for the preflight: JFR's threads, its
 * repository under java.io.tmpdir and the start-up cost are not wanted in a snapshot.
 */
final class IoStacks {
    static final String PROPERTY = "kiln.agent.io-stacks";
    static final String[] SOCKET_EVENTS = {"jdk.SocketWrite", "jdk.SocketRead"};
    static final String[] FILE_EVENTS = {"jdk.FileWrite"};
    /** Frames kept per stack (JFR's own default depth is 64). */
    static final int MAX_FRAMES = 40;

    private static Recording recording;

    private IoStacks() {
    }

    /** Starts the recording when kiln asked for it (the system property). */
    static synchronized void startIfAsked() {
        if (!Boolean.getBoolean(PROPERTY) || recording != null) {
            return;
        }
        try {
            Recording r = new Recording();
            r.setName("kiln-io-stacks");
            // On disk: an in-memory recording drops its oldest events when its buffers fill up,
            // and the oldest events are the ones wanted.
            r.setToDisk(true);
            for (String name : SOCKET_EVENTS) {
                r.enable(name).withThreshold(Duration.ZERO).withStackTrace();
            }
            for (String name : FILE_EVENTS) {
                r.enable(name).withThreshold(Duration.ZERO).withStackTrace();
            }
            r.start();
            recording = r;
            Log.debug("io-stacks: recording socket and file I/O");
        } catch (Throwable t) {
            Log.warn("io-stacks: cannot start a JFR recording, the preflight will show no stacks: " + t);
        }
    }

    static synchronized boolean active() {
        return recording != null;
    }

    /**
     * Dumps and closes the recording; the io-stacks.json document (PROTOCOL.md), or null when no
     * recording runs.
     */
    static synchronized String collect() throws IOException {
        if (recording == null) {
            return null;
        }
        long start = System.nanoTime();
        Path file = Files.createTempFile("kiln-io-stacks", ".jfr");
        Map<String, First> sockets = new LinkedHashMap<>();
        Map<String, First> files = new LinkedHashMap<>();
        long events = 0;
        try {
            recording.dump(file);
            recording.close();
            recording = null;
            try (RecordingFile in = new RecordingFile(file)) {
                while (in.hasMoreEvents()) {
                    RecordedEvent e = in.readEvent();
                    String type = e.getEventType().getName();
                    events++;
                    if (type.equals("jdk.SocketWrite") || type.equals("jdk.SocketRead")) {
                        String address = e.getString("address");
                        int port = e.getInt("port");
                        keepEarliest(sockets, address + "|" + port, e, type, address, port, null);
                    } else if (type.equals("jdk.FileWrite")) {
                        String path = e.getString("path");
                        keepEarliest(files, path, e, type, null, 0, path);
                    }
                }
            }
        } finally {
            Files.deleteIfExists(file);
        }
        StringBuilder sb = new StringBuilder();
        sb.append("{\"protocol\":").append(Coordinator.PROTOCOL);
        sb.append(",\"events\":").append(events);
        sb.append(",\"elapsed_us\":").append((System.nanoTime() - start) / 1000);
        sb.append(",\"sockets\":[");
        append(sb, sockets.values());
        sb.append("],\"files\":[");
        append(sb, files.values());
        sb.append("]}\n");
        return sb.toString();
    }

    /** The earliest event seen for one key. */
    private static final class First {
        Instant time;
        String event;
        String address;
        int port;
        String path;
        String thread;
        boolean truncated;
        List<String> frames;
    }

    private static void keepEarliest(Map<String, First> map, String key, RecordedEvent e, String type, String address, int port,
        String path) {
        First known = map.get(key);
        Instant time = e.getStartTime();
        // Events of different threads' buffers are not in time order in the file.
        if (known != null && !time.isBefore(known.time)) {
            return;
        }
        First f = new First();
        f.time = time;
        f.event = type;
        f.address = address;
        f.port = port;
        f.path = path;
        f.thread = e.getThread() == null ? null : e.getThread().getJavaName();
        RecordedStackTrace stack = e.getStackTrace();
        f.truncated = stack != null && stack.isTruncated();
        f.frames = stack == null ? List.of() : frames(stack.getFrames());
        map.put(key, f);
    }

    /**
     * The frames as "class.method:line", from the first frame outside the JDK: the JDK's own I/O
     * plumbing (streams, channels) above the caller says nothing about who opened the socket. A
     * stack of JDK frames only is kept whole.
     */
    static List<String> frames(List<RecordedFrame> recorded) {
        List<String> all = new ArrayList<>();
        int firstOutside = -1;
        for (RecordedFrame frame : recorded) {
            if (!frame.isJavaFrame() || frame.getMethod() == null) {
                continue;
            }
            String type = frame.getMethod().getType().getName();
            if (firstOutside < 0 && !isJdk(type)) {
                firstOutside = all.size();
            }
            int line = frame.getLineNumber();
            all.add(type + "." + frame.getMethod().getName() + (line > 0 ? ":" + line : ""));
        }
        List<String> kept = firstOutside > 0 ? all.subList(firstOutside, all.size()) : all;
        return kept.size() > MAX_FRAMES ? kept.subList(0, MAX_FRAMES) : kept;
    }

    static boolean isJdk(String type) {
        return type.startsWith("java.") || type.startsWith("javax.") || type.startsWith("sun.") || type.startsWith("jdk.")
            || type.startsWith("com.sun.");
    }

    private static void append(StringBuilder sb, Iterable<First> list) {
        boolean first = true;
        for (First f : list) {
            sb.append(first ? "\n  {" : ",\n  {");
            first = false;
            if (f.path != null) {
                sb.append("\"path\":").append(Json.string(f.path));
            } else {
                sb.append("\"address\":").append(Json.string(f.address)).append(",\"port\":").append(f.port);
            }
            sb.append(",\"event\":").append(Json.string(f.event));
            sb.append(",\"time\":").append(Json.string(f.time.toString()));
            sb.append(",\"thread\":").append(Json.string(f.thread));
            sb.append(",\"truncated\":").append(f.truncated);
            sb.append(",\"stack\":[");
            for (int i = 0; i < f.frames.size(); i++) {
                sb.append(i == 0 ? "" : ",").append(Json.string(f.frames.get(i)));
            }
            sb.append("]}");
        }
    }
}
