package dev.kiln.crac;

import java.lang.instrument.Instrumentation;
import java.nio.file.Path;

/**
 * {@code -javaagent:kiln-crac-agent.jar[=dir=/run/kiln-agent]}: makes this package org.crac's
 * backend (unless {@code org.crac.Core.Compat} is already set), opens the JDK internals the
 * identity refresh needs, and starts the coordinator
 * on {@code -Dkiln.agent.dir} (or the {@code dir=} agent argument).
 */
public final class Agent {
    private Agent() {
    }

    public static void premain(String args, Instrumentation inst) {
        start(args, inst);
    }

    public static void agentmain(String args, Instrumentation inst) {
        start(args, inst);
    }

    private static void start(String args, Instrumentation inst) {
        if (System.getProperty("org.crac.Core.Compat") == null) {
            System.setProperty("org.crac.Core.Compat", "dev.kiln.crac");
        }
        try {
            JdkAccess.open(inst);
        } catch (Throwable t) {
            Log.warn("cannot open java.base internals, identity refresh will be partial: " + t);
        }
        // Before the application's code runs: the sockets it opens at start are the ones wanted.
        IoStacks.startIfAsked();
        String dir = System.getProperty("kiln.agent.dir");
        if (args != null) {
            for (String a : args.split(",")) {
                if (a.startsWith("dir=") && dir == null) {
                    dir = a.substring(4);
                    System.setProperty("kiln.agent.dir", dir);
                }
            }
        }
        if (dir == null || dir.isEmpty()) {
            Log.debug("no -Dkiln.agent.dir: no coordinator");
            return;
        }
        try {
            Coordinator.start(Path.of(dir));
        } catch (Throwable t) {
            Log.warn("cannot start the coordinator on " + dir + ": " + t);
        }
    }
}
