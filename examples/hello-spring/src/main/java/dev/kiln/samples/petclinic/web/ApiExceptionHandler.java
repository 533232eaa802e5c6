package dev.kiln.samples.petclinic.web;

import dev.kiln.samples.petclinic.service.InvalidRequestException;
import dev.kiln.samples.petclinic.service.NotFoundException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.TypeMismatchException;
import org.springframework.http.HttpStatus;
import org.springframework.http.ResponseEntity;
import org.springframework.http.converter.HttpMessageNotReadableException;
import org.springframework.validation.BindException;
import org.springframework.validation.BindingResult;
import org.springframework.validation.FieldError;
import org.springframework.validation.ObjectError;
import org.springframework.web.HttpMediaTypeNotSupportedException;
import org.springframework.web.HttpRequestMethodNotSupportedException;
import org.springframework.web.bind.MethodArgumentNotValidException;
import org.springframework.web.bind.ServletRequestBindingException;
import org.springframework.web.bind.annotation.ControllerAdvice;
import org.springframework.web.bind.annotation.ExceptionHandler;
import org.springframework.web.servlet.NoHandlerFoundException;

import javax.validation.ConstraintViolation;
import javax.validation.ConstraintViolationException;
import javax.validation.ElementKind;
import javax.validation.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Every error the API produces is a small JSON object: {"status":..,"error":..,"message":..}.
 * Validation failures add "errors": [{"field":"lastName","message":"may not be empty"}, ...],
 * sorted by field, and the message lists them all.
 */
@ControllerAdvice
public class ApiExceptionHandler {

    private static final Logger LOG = LoggerFactory.getLogger(ApiExceptionHandler.class);

    @ExceptionHandler({NotFoundException.class, NoHandlerFoundException.class})
    public ResponseEntity<Map<String, Object>> notFound(Exception e) {
        return error(HttpStatus.NOT_FOUND, e.getMessage());
    }

    @ExceptionHandler({InvalidRequestException.class, TypeMismatchException.class,
            ServletRequestBindingException.class})
    public ResponseEntity<Map<String, Object>> badRequest(Exception e) {
        return error(HttpStatus.BAD_REQUEST, e.getMessage());
    }

    /** A {@code @Valid} request body that breaks its constraints (checked by the web layer). */
    @ExceptionHandler({MethodArgumentNotValidException.class, BindException.class})
    public ResponseEntity<Map<String, Object>> invalidBody(Exception e) {
        BindingResult result = e instanceof BindException
                ? ((BindException) e).getBindingResult() : ((MethodArgumentNotValidException) e).getBindingResult();
        List<Map<String, Object>> errors = new ArrayList<Map<String, Object>>();
        for (FieldError error : result.getFieldErrors()) {
            errors.add(fieldError(error.getField(), error.getDefaultMessage(), error.getRejectedValue()));
        }
        for (ObjectError error : result.getGlobalErrors()) {
            errors.add(fieldError(error.getObjectName(), error.getDefaultMessage(), null));
        }
        return validationFailed(errors);
    }

    /** A call into a {@code @Validated} bean that breaks its method constraints. */
    @ExceptionHandler(ConstraintViolationException.class)
    public ResponseEntity<Map<String, Object>> constraintViolation(ConstraintViolationException e) {
        List<Map<String, Object>> errors = new ArrayList<Map<String, Object>>();
        for (ConstraintViolation<?> violation : e.getConstraintViolations()) {
            errors.add(fieldError(field(violation.getPropertyPath()), violation.getMessage(), violation.getInvalidValue()));
        }
        return validationFailed(errors);
    }

    // Jackson's own message, first line only: the rest repeats the input and Spring's wrapping.
    @ExceptionHandler(HttpMessageNotReadableException.class)
    public ResponseEntity<Map<String, Object>> unreadable(HttpMessageNotReadableException e) {
        String message = e.getMostSpecificCause().getMessage();
        return error(HttpStatus.BAD_REQUEST, message == null ? "unreadable request body" : message.split("\n", 2)[0]);
    }

    @ExceptionHandler(HttpRequestMethodNotSupportedException.class)
    public ResponseEntity<Map<String, Object>> methodNotAllowed(HttpRequestMethodNotSupportedException e) {
        return error(HttpStatus.METHOD_NOT_ALLOWED, e.getMessage());
    }

    @ExceptionHandler(HttpMediaTypeNotSupportedException.class)
    public ResponseEntity<Map<String, Object>> unsupportedMediaType(HttpMediaTypeNotSupportedException e) {
        return error(HttpStatus.UNSUPPORTED_MEDIA_TYPE, e.getMessage());
    }

    @ExceptionHandler(Exception.class)
    public ResponseEntity<Map<String, Object>> unexpected(Exception e) {
        LOG.error("request failed", e);
        return error(HttpStatus.INTERNAL_SERVER_ERROR, e.getClass().getSimpleName());
    }

    private static ResponseEntity<Map<String, Object>> validationFailed(List<Map<String, Object>> errors) {
        Collections.sort(errors, new Comparator<Map<String, Object>>() {
            @Override
            public int compare(Map<String, Object> a, Map<String, Object> b) {
                int byField = String.valueOf(a.get("field")).compareTo(String.valueOf(b.get("field")));
                return byField != 0 ? byField : String.valueOf(a.get("message")).compareTo(String.valueOf(b.get("message")));
            }
        });
        StringBuilder message = new StringBuilder("validation failed:");
        for (Map<String, Object> error : errors) {
            message.append(message.charAt(message.length() - 1) == ':' ? " " : "; ")
                    .append(error.get("field")).append(' ').append(error.get("message"));
        }
        ResponseEntity<Map<String, Object>> response = error(HttpStatus.BAD_REQUEST, message.toString());
        response.getBody().put("errors", errors);
        return response;
    }

    private static Map<String, Object> fieldError(String field, String message, Object rejectedValue) {
        Map<String, Object> error = new LinkedHashMap<String, Object>();
        error.put("field", field);
        error.put("message", message);
        // Scalars only: echoing a whole rejected object back would repeat the request body.
        if (rejectedValue instanceof CharSequence || rejectedValue instanceof Number || rejectedValue instanceof Boolean) {
            error.put("rejectedValue", rejectedValue.toString());
        }
        return error;
    }

    /**
     * "createOwner.owner.pets[0].name" names the method and its parameter first; clients know the
     * body's fields only, so those nodes are dropped ("pets[0].name"), unless nothing else is left.
     */
    static String field(Path path) {
        StringBuilder field = new StringBuilder();
        String parameter = null;
        for (Path.Node node : path) {
            if (node.getKind() == ElementKind.METHOD || node.getKind() == ElementKind.CONSTRUCTOR) {
                continue;
            }
            if (node.getKind() == ElementKind.PARAMETER || node.getKind() == ElementKind.CROSS_PARAMETER) {
                parameter = node.getName();
                continue;
            }
            // A node inside a list or map carries the index of the element it is in ("pets[0].name").
            if (node.isInIterable() && field.length() > 0) {
                field.append('[').append(node.getIndex() != null ? node.getIndex()
                        : node.getKey() != null ? node.getKey() : "").append(']');
            }
            if (node.getName() != null) { // null: the bean itself (a class-level constraint)
                field.append(field.length() > 0 ? "." : "").append(node.getName());
            }
        }
        return field.length() > 0 ? field.toString() : String.valueOf(parameter);
    }

    private static ResponseEntity<Map<String, Object>> error(HttpStatus status, String message) {
        Map<String, Object> body = new LinkedHashMap<String, Object>();
        body.put("status", status.value());
        body.put("error", status.getReasonPhrase());
        body.put("message", message);
        return new ResponseEntity<Map<String, Object>>(body, status);
    }
}
