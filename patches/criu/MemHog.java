import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The JVM that patches/criu/test.sh checkpoints and restores: fills MB MiB of
 * heap with byte arrays whose content it knows, writes "ready PID" to
 * RESULT.ready, and polls for RESULT.go. Once restored and told to go it checks
 * every array, churns garbage through several GCs, checks again and writes
 * "ok ..." or "FAIL ..." lines and "done" to RESULT.
 */
public class MemHog {
    static byte value(int array, int i) { return (byte) (array * 31 + i * 7 + (i >>> 9)); }

    static long verify(List<byte[]> arrays) {
        long bad = 0;
        for (int a = 0; a < arrays.size(); a++) {
            byte[] b = arrays.get(a);
            for (int i = 0; i < b.length; i++) if (b[i] != value(a, i)) bad++;
        }
        return bad;
    }

    public static void main(String[] args) throws Exception {
        Path result = Path.of(args[0]);
        int mb = Integer.parseInt(args[1]);
        List<byte[]> arrays = new ArrayList<>();
        for (int a = 0; a < mb; a++) {
            byte[] b = new byte[1 << 20];
            for (int i = 0; i < b.length; i++) b[i] = value(a, i);
            arrays.add(b);
        }
        System.gc();
        Files.writeString(Path.of(args[0] + ".ready"), "ready " + ProcessHandle.current().pid() + "\n");
        Path go = Path.of(args[0] + ".go");
        while (!Files.exists(go)) Thread.sleep(10);

        StringBuilder out = new StringBuilder();
        long bad = verify(arrays);
        out.append(bad == 0 ? "ok heap-content\n" : "FAIL heap-content: " + bad + " bytes differ\n");
        // Churn: drop half of the arrays, allocate garbage, run GCs that move what is left.
        long sum = 0;
        for (int round = 0; round < 5; round++) {
            List<byte[]> garbage = new ArrayList<>();
            for (int i = 0; i < 64; i++) {
                byte[] g = new byte[1 << 20];
                g[i] = (byte) i;
                garbage.add(g);
            }
            for (byte[] g : garbage) sum += g[round];
            System.gc();
        }
        bad = verify(arrays);
        out.append(bad == 0 ? "ok heap-after-gc\n" : "FAIL heap-after-gc: " + bad + " bytes differ\n");
        for (int i = arrays.size() - 1; i >= arrays.size() / 2; i--) arrays.remove(i);
        System.gc();
        bad = verify(arrays);
        out.append(bad == 0 ? "ok heap-after-shrink\n" : "FAIL heap-after-shrink: " + bad + " bytes differ\n");
        out.append("info churn " + sum + "\n");
        out.append("done\n");
        Files.writeString(result, out.toString());
    }
}
