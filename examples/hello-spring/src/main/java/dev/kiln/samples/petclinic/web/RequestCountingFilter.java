package dev.kiln.samples.petclinic.web;

import dev.kiln.samples.petclinic.AppState;

import javax.servlet.Filter;
import javax.servlet.FilterChain;
import javax.servlet.FilterConfig;
import javax.servlet.ServletException;
import javax.servlet.ServletRequest;
import javax.servlet.ServletResponse;
import java.io.IOException;

/** Counts every request the server handles (errors and 404s included) for /id's "requests". */
public class RequestCountingFilter implements Filter {

    private final AppState state;

    public RequestCountingFilter(AppState state) {
        this.state = state;
    }

    @Override
    public void init(FilterConfig filterConfig) {
    }

    @Override
    public void doFilter(ServletRequest request, ServletResponse response, FilterChain chain)
            throws IOException, ServletException {
        state.countRequest();
        chain.doFilter(request, response);
    }

    @Override
    public void destroy() {
    }
}
