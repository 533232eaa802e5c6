package dev.kiln.samples.petclinic.config;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.databind.DeserializationContext;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.deser.std.FromStringDeserializer;
import com.fasterxml.jackson.databind.module.SimpleModule;
import com.fasterxml.jackson.databind.ser.std.ToStringSerializer;
import org.springframework.context.annotation.Bean;
import org.springframework.http.converter.HttpMessageConverter;
import org.springframework.http.converter.StringHttpMessageConverter;
import org.springframework.http.converter.json.MappingJackson2HttpMessageConverter;
import org.springframework.web.servlet.mvc.method.annotation.ExceptionHandlerExceptionResolver;
import org.springframework.web.servlet.mvc.method.annotation.RequestMappingHandlerAdapter;
import org.springframework.web.servlet.mvc.method.annotation.RequestMappingHandlerMapping;

import java.nio.charset.Charset;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.List;

/**
 * Spring MVC infrastructure registered by hand instead of {@code @EnableWebMvc}, whose
 * {@code @Configuration} class Spring 4.3 cannot CGLIB-enhance on JDK 17+ (see {@link DataConfig}
 * for the "lite" {@code @Bean} mode used here). The DispatcherServlet finds these beans by type.
 */
public class WebConfig {

    @Bean
    public ObjectMapper objectMapper() {
        // Debian has no jackson-datatype-jsr310, so ISO-8601 LocalDate (de)serialisation is added here.
        SimpleModule dates = new SimpleModule("iso-local-date");
        dates.addSerializer(LocalDate.class, ToStringSerializer.instance);
        dates.addDeserializer(LocalDate.class, new FromStringDeserializer<LocalDate>(LocalDate.class) {
            @Override
            protected LocalDate _deserialize(String value, DeserializationContext ctxt) {
                return LocalDate.parse(value.trim());
            }
        });
        return new ObjectMapper()
                .registerModule(dates)
                .setSerializationInclusion(JsonInclude.Include.NON_NULL)
                .disable(SerializationFeature.FAIL_ON_EMPTY_BEANS)
                .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
    }

    @Bean
    public MappingJackson2HttpMessageConverter jsonConverter(ObjectMapper objectMapper) {
        return new MappingJackson2HttpMessageConverter(objectMapper);
    }

    @Bean
    public RequestMappingHandlerMapping requestMappingHandlerMapping() {
        RequestMappingHandlerMapping mapping = new RequestMappingHandlerMapping();
        mapping.setOrder(0);
        // "/owners/1.json" is not a thing in this API; do not let suffixes select a handler.
        mapping.setUseSuffixPatternMatch(false);
        return mapping;
    }

    @Bean
    public RequestMappingHandlerAdapter requestMappingHandlerAdapter(MappingJackson2HttpMessageConverter jsonConverter) {
        RequestMappingHandlerAdapter adapter = new RequestMappingHandlerAdapter();
        adapter.setMessageConverters(converters(jsonConverter));
        return adapter;
    }

    // Without it the DispatcherServlet's default resolver would answer @ExceptionHandler methods
    // with no JSON converter; errors must be JSON like everything else.
    @Bean
    public ExceptionHandlerExceptionResolver exceptionHandlerExceptionResolver(MappingJackson2HttpMessageConverter jsonConverter) {
        ExceptionHandlerExceptionResolver resolver = new ExceptionHandlerExceptionResolver();
        resolver.setMessageConverters(converters(jsonConverter));
        resolver.setOrder(0);
        return resolver;
    }

    private static List<HttpMessageConverter<?>> converters(MappingJackson2HttpMessageConverter jsonConverter) {
        List<HttpMessageConverter<?>> converters = new ArrayList<HttpMessageConverter<?>>();
        converters.add(new StringHttpMessageConverter(Charset.forName("UTF-8")));
        converters.add(jsonConverter);
        return converters;
    }
}
