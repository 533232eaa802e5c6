package dev.kiln.samples.boot;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.context.ApplicationListener;

import java.util.Map;

/**
 * A petclinic-like JSON service on genuine Spring Boot 3.5 with embedded Tomcat, HikariCP over H2
 * (or PostgreSQL), actuator, and an org.crac resource that closes the pool's connections before a
 * checkpoint. Prints {@code ready} on stdout once Spring Boot reports the application ready.
 */
@SpringBootApplication(proxyBeanMethods = false)
public class BootPetclinicApplication {

    public static void main(String[] args) {
        // First thing: "startedAt" is when main began, as the other samples report it.
        AppState state = AppState.create(System.currentTimeMillis(), System.nanoTime(),
                System.getenv("SECURE_RANDOM_ALGORITHM"));
        SpringApplication app = new SpringApplication(BootPetclinicApplication.class);
        // Defaults only: application.properties, environment variables and -D flags all win over these.
        app.setDefaultProperties(Map.of(
                "server.port", envOr("PORT", "8080"),
                "server.address", "0.0.0.0"));
        app.addInitializers(context -> context.getBeanFactory().registerSingleton("appState", state));
        app.addListeners((ApplicationListener<ApplicationReadyEvent>) event -> {
            state.markReady();
            System.out.println("boot-petclinic: started in " + state.millisSinceMain() + " ms on port "
                    + event.getApplicationContext().getEnvironment().getProperty("local.server.port"));
            System.out.println("ready");
            System.out.flush();
        });
        app.run(args);
    }

    private static String envOr(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isBlank() ? fallback : value;
    }
}
