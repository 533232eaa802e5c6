package dev.kiln.samples.petclinic.config;

import com.codahale.metrics.MetricRegistry;
import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.databind.DeserializationContext;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.Module;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.deser.std.FromStringDeserializer;
import com.fasterxml.jackson.databind.module.SimpleModule;
import com.fasterxml.jackson.databind.ser.std.ToStringSerializer;
import dev.kiln.samples.petclinic.Application;
import dev.kiln.samples.petclinic.web.RequestMetricsInterceptor;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.ComponentScan;
import org.springframework.context.annotation.FilterType;
import org.springframework.format.support.DefaultFormattingConversionService;
import org.springframework.format.support.FormattingConversionService;
import org.springframework.http.converter.ByteArrayHttpMessageConverter;
import org.springframework.http.converter.HttpMessageConverter;
import org.springframework.http.converter.ResourceHttpMessageConverter;
import org.springframework.http.converter.StringHttpMessageConverter;
import org.springframework.http.converter.json.Jackson2ObjectMapperBuilder;
import org.springframework.http.converter.json.MappingJackson2HttpMessageConverter;
import org.springframework.http.converter.support.AllEncompassingFormHttpMessageConverter;
import org.springframework.stereotype.Controller;
import org.springframework.validation.Validator;
import org.springframework.web.bind.annotation.ControllerAdvice;
import org.springframework.web.bind.support.ConfigurableWebBindingInitializer;
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
 * What it sets up follows {@code @EnableWebMvc} plus Spring Boot's MVC and Jackson
 * auto-configuration: a formatting conversion service and the Bean Validation validator for data
 * binding, the usual message converters, an ObjectMapper built by Jackson2ObjectMapperBuilder
 * from the context's Jackson modules. The scan picks up the controllers and their advice only.
 */
@ComponentScan(basePackageClasses = Application.class, useDefaultFilters = false, includeFilters = @ComponentScan.Filter(
        type = FilterType.ANNOTATION, classes = {Controller.class, ControllerAdvice.class}))
public class WebConfig {

    /** ISO-8601 LocalDate (de)serialisation: Debian has no jackson-datatype-jsr310. */
    @Bean
    public Module isoLocalDateModule() {
        SimpleModule dates = new SimpleModule("iso-local-date");
        dates.addSerializer(LocalDate.class, ToStringSerializer.instance);
        dates.addDeserializer(LocalDate.class, new FromStringDeserializer<LocalDate>(LocalDate.class) {
            @Override
            protected LocalDate _deserialize(String value, DeserializationContext ctxt) {
                return LocalDate.parse(value.trim());
            }
        });
        return dates;
    }

    // Every Module bean is installed, as Spring Boot's JacksonAutoConfiguration does; the builder
    // also registers the well-known modules (jdk8, jsr310, joda...) that are on the classpath.
    @Bean
    public ObjectMapper objectMapper(List<Module> modules) {
        return Jackson2ObjectMapperBuilder.json()
                .modulesToInstall(modules.toArray(new Module[0]))
                .serializationInclusion(JsonInclude.Include.NON_NULL)
                .featuresToDisable(SerializationFeature.FAIL_ON_EMPTY_BEANS,
                        SerializationFeature.WRITE_DATES_AS_TIMESTAMPS,
                        DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                .featuresToEnable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION)
                .build();
    }

    @Bean
    public MappingJackson2HttpMessageConverter jsonConverter(ObjectMapper objectMapper) {
        return new MappingJackson2HttpMessageConverter(objectMapper);
    }

    /** Converters and formatters for request parameters and path variables (numbers, dates...). */
    @Bean
    public FormattingConversionService mvcConversionService() {
        return new DefaultFormattingConversionService();
    }

    @Bean
    public RequestMappingHandlerMapping requestMappingHandlerMapping(MetricRegistry metrics) {
        RequestMappingHandlerMapping mapping = new RequestMappingHandlerMapping();
        mapping.setInterceptors(new RequestMetricsInterceptor(metrics));
        mapping.setOrder(0);
        // "/owners/1.json" is not a thing in this API; do not let suffixes select a handler.
        mapping.setUseSuffixPatternMatch(false);
        return mapping;
    }

    /**
     * {@code validator} is the root context's LocalValidatorFactoryBean (see {@link CoreConfig}):
     * {@code @Valid @RequestBody} arguments are validated with it, and a failure raises
     * MethodArgumentNotValidException, which ApiExceptionHandler answers with a 400 naming the fields.
     */
    @Bean
    public RequestMappingHandlerAdapter requestMappingHandlerAdapter(MappingJackson2HttpMessageConverter jsonConverter,
                                                                     FormattingConversionService mvcConversionService,
                                                                     Validator validator) {
        ConfigurableWebBindingInitializer binding = new ConfigurableWebBindingInitializer();
        binding.setConversionService(mvcConversionService);
        binding.setValidator(validator);
        RequestMappingHandlerAdapter adapter = new RequestMappingHandlerAdapter();
        adapter.setWebBindingInitializer(binding);
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

    /** The converters {@code @EnableWebMvc} installs, less XML; JSON through the shared converter. */
    private static List<HttpMessageConverter<?>> converters(MappingJackson2HttpMessageConverter jsonConverter) {
        StringHttpMessageConverter strings = new StringHttpMessageConverter(Charset.forName("UTF-8"));
        strings.setWriteAcceptCharset(false);
        List<HttpMessageConverter<?>> converters = new ArrayList<HttpMessageConverter<?>>();
        converters.add(new ByteArrayHttpMessageConverter());
        converters.add(strings);
        converters.add(new ResourceHttpMessageConverter());
        converters.add(new AllEncompassingFormHttpMessageConverter());
        converters.add(jsonConverter);
        return converters;
    }
}
