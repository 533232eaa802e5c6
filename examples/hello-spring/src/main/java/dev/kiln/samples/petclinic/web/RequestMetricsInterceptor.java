package dev.kiln.samples.petclinic.web;

import com.codahale.metrics.MetricRegistry;
import org.springframework.web.servlet.HandlerMapping;
import org.springframework.web.servlet.handler.HandlerInterceptorAdapter;

import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;

/**
 * Times every request handled by a controller: one timer per method, URL pattern and status,
 * e.g. "http.server.requests.GET /owners/{id}.200" (Boot's http.server.requests metric).
 */
public class RequestMetricsInterceptor extends HandlerInterceptorAdapter {

    private static final String STARTED = RequestMetricsInterceptor.class.getName() + ".started";

    private final MetricRegistry registry;

    public RequestMetricsInterceptor(MetricRegistry registry) {
        this.registry = registry;
    }

    @Override
    public boolean preHandle(HttpServletRequest request, HttpServletResponse response, Object handler) {
        request.setAttribute(STARTED, System.nanoTime());
        return true;
    }

    @Override
    public void afterCompletion(HttpServletRequest request, HttpServletResponse response, Object handler, Exception ex) {
        Object started = request.getAttribute(STARTED);
        Object pattern = request.getAttribute(HandlerMapping.BEST_MATCHING_PATTERN_ATTRIBUTE);
        if (started instanceof Long) {
            String uri = pattern != null ? pattern.toString() : "UNKNOWN";
            registry.timer(MetricRegistry.name("http.server.requests", request.getMethod() + " " + uri,
                    String.valueOf(response.getStatus())))
                    .update(System.nanoTime() - (Long) started, java.util.concurrent.TimeUnit.NANOSECONDS);
        }
    }
}
