package dev.kiln.samples.boot;

import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import org.springframework.stereotype.Component;
import org.springframework.web.filter.OncePerRequestFilter;

import java.io.IOException;

/** Counts every request (actuator's included) before it is handled, so /id counts itself. */
@Component
public class RequestCountingFilter extends OncePerRequestFilter {

    private final AppState state;

    public RequestCountingFilter(AppState state) {
        this.state = state;
    }

    @Override
    protected void doFilterInternal(HttpServletRequest request, HttpServletResponse response, FilterChain chain)
            throws ServletException, IOException {
        state.countRequest();
        chain.doFilter(request, response);
    }
}
