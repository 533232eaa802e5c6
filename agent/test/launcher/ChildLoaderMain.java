import java.io.File;
import java.net.URL;
import java.net.URLClassLoader;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Runs a main class from a class loader of its own, child of the system class loader, as Spring
 * Boot's executable-jar launcher does: org.crac and the application are not on the system class
 * path; the agent's dev.kiln.crac is (agent jars are appended to it).
 * Args: CLASSPATH (':'-separated) MAIN-CLASS ARGS...
 */
public class ChildLoaderMain {
    public static void main(String[] args) throws Exception {
        List<URL> urls = new ArrayList<>();
        for (String p : args[0].split(":")) {
            urls.add(new File(p).toURI().toURL());
        }
        URLClassLoader loader = new URLClassLoader("app", urls.toArray(new URL[0]), ClassLoader.getSystemClassLoader());
        Thread.currentThread().setContextClassLoader(loader);
        Class<?> main = Class.forName(args[1], true, loader);
        main.getMethod("main", String[].class).invoke(null, (Object) Arrays.copyOfRange(args, 2, args.length));
    }
}
