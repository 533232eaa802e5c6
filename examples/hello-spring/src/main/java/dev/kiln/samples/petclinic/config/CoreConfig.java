package dev.kiln.samples.petclinic.config;

import org.springframework.beans.factory.config.BeanDefinition;
import dev.kiln.samples.petclinic.Application;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.ComponentScan;
import org.springframework.context.annotation.FilterType;
import org.springframework.context.annotation.Role;
import org.springframework.context.support.PropertySourcesPlaceholderConfigurer;
import org.springframework.stereotype.Controller;
import org.springframework.validation.beanvalidation.LocalValidatorFactoryBean;
import org.springframework.validation.beanvalidation.MethodValidationPostProcessor;
import org.springframework.web.bind.annotation.ControllerAdvice;

/**
 * The root context's component scan and the infrastructure that Spring Boot's auto-configuration
 * would contribute.
 *
 * <p>The scan covers the whole application package, as {@code @SpringBootApplication} does, and
 * registers every {@code @Service}, {@code @Repository} and {@code @Component}; controllers and
 * their advice belong to the web context ({@link WebConfig} scans for those).
 *
 * <p>Infrastructure:
 * {@code ${...}} placeholders resolved against the environment (application.yml, environment
 * variables, system properties), and Bean Validation (Hibernate Validator, with the Tomcat EL
 * implementation for message interpolation) both for Spring MVC's {@code @Valid} arguments and
 * for {@code @Validated} beans, whose method parameters are checked by a proxy.
 *
 * <p>Plain class in "lite" mode, like {@link DataConfig} ({@code @ComponentScan} alone does not make
 * it a CGLIB-enhanced {@code @Configuration}); static methods because these are
 * post-processors or beans that post-processors need.
 */
@ComponentScan(basePackageClasses = Application.class, excludeFilters = @ComponentScan.Filter(
        type = FilterType.ANNOTATION, classes = {Controller.class, ControllerAdvice.class}))
public class CoreConfig {

    @Bean
    public static PropertySourcesPlaceholderConfigurer propertySourcesPlaceholderConfigurer() {
        return new PropertySourcesPlaceholderConfigurer();
    }

    // One ValidatorFactory for the whole application: the web context's data binder uses it too.
    // Spring feeds it its own ParameterNameDiscoverer, so violations name parameters as written.
    @Bean
    @Role(BeanDefinition.ROLE_INFRASTRUCTURE)
    public static LocalValidatorFactoryBean validator() {
        return new LocalValidatorFactoryBean();
    }

    @Bean
    public static MethodValidationPostProcessor methodValidationPostProcessor(LocalValidatorFactoryBean validator) {
        MethodValidationPostProcessor processor = new MethodValidationPostProcessor();
        processor.setValidator(validator);
        // Validate before the transaction and cache interceptors: an invalid call never opens a transaction.
        processor.setBeforeExistingAdvisors(true);
        return processor;
    }
}
