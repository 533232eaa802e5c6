package dev.kiln.crac;

import java.io.PrintWriter;
import java.io.StringWriter;

/** The error reports kiln reads (checkpoint.failed, restore.failed): small hand-written JSON. */
final class Json {
    private Json() {
    }

    static String string(String s) {
        if (s == null) {
            return "null";
        }
        StringBuilder sb = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> sb.append("\\\"");
                case '\\' -> sb.append("\\\\");
                case '\n' -> sb.append("\\n");
                case '\r' -> sb.append("\\r");
                case '\t' -> sb.append("\\t");
                default -> {
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
                }
            }
        }
        return sb.append('"').toString();
    }

    static String stack(Throwable t) {
        StringWriter sw = new StringWriter();
        try (PrintWriter pw = new PrintWriter(sw)) {
            t.printStackTrace(pw);
        }
        return sw.toString();
    }

    /**
     * {"phase": ..., "exception": class, "errors": [{"class","message","stack"}...]}: one element
     * per suppressed exception of {@code failure} (or the failure itself when it has none).
     */
    static String failure(String phase, Throwable failure) {
        StringBuilder sb = new StringBuilder();
        sb.append("{\"phase\":").append(string(phase));
        sb.append(",\"exception\":").append(string(failure.getClass().getName()));
        sb.append(",\"errors\":[");
        Throwable[] list = failure.getSuppressed();
        if (list.length == 0) {
            list = new Throwable[] {failure};
        }
        for (int i = 0; i < list.length; i++) {
            Throwable t = list[i];
            if (i > 0) {
                sb.append(',');
            }
            sb.append("\n  {\"class\":").append(string(t.getClass().getName()));
            sb.append(",\"message\":").append(string(t.getMessage()));
            sb.append(",\"stack\":").append(string(stack(t))).append('}');
        }
        sb.append("\n]}\n");
        return sb.toString();
    }
}
