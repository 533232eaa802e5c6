package dev.kiln.samples.petclinic.config;

import org.springframework.aop.framework.autoproxy.InfrastructureAdvisorAutoProxyCreator;
import org.springframework.beans.factory.config.BeanDefinition;
import org.springframework.cache.annotation.AnnotationCacheOperationSource;
import org.springframework.cache.interceptor.BeanFactoryCacheOperationSourceAdvisor;
import org.springframework.cache.interceptor.CacheInterceptor;
import org.springframework.cache.interceptor.CacheOperationSource;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Role;
import org.springframework.core.Ordered;
import org.springframework.transaction.annotation.AnnotationTransactionAttributeSource;
import org.springframework.transaction.interceptor.BeanFactoryTransactionAttributeSourceAdvisor;
import org.springframework.transaction.interceptor.TransactionAttributeSource;
import org.springframework.transaction.interceptor.TransactionInterceptor;

/**
 * What {@code @EnableTransactionManagement} and {@code @EnableCaching} would register, spelled out:
 * those annotations import {@code @Configuration} classes, which Spring 4.3 cannot CGLIB-enhance
 * on JDK 17+. Proxies are JDK dynamic proxies (proxyTargetClass stays false), so advised beans
 * are used through their interfaces.
 *
 * <p>Static methods because the auto-proxy creator is a BeanPostProcessor and the advisors are
 * looked up while other beans are still being created.
 */
public class ProxyConfig {

    // First of the proxying post-processors, as AopConfigUtils registers it: the method-validation
    // post-processor (CoreConfig) then adds its advisor to this proxy instead of wrapping it in a
    // second one, whose proxy class would hide the @Transactional and @Cacheable annotations.
    @Bean
    public static InfrastructureAdvisorAutoProxyCreator autoProxyCreator() {
        InfrastructureAdvisorAutoProxyCreator creator = new InfrastructureAdvisorAutoProxyCreator();
        creator.setOrder(Ordered.HIGHEST_PRECEDENCE);
        return creator;
    }

    @Bean
    @Role(BeanDefinition.ROLE_INFRASTRUCTURE)
    public static AnnotationTransactionAttributeSource transactionAttributeSource() {
        return new AnnotationTransactionAttributeSource();
    }

    // The interceptor finds the single PlatformTransactionManager bean by itself when first used.
    @Bean
    @Role(BeanDefinition.ROLE_INFRASTRUCTURE)
    public static TransactionInterceptor transactionInterceptor(TransactionAttributeSource transactionAttributeSource) {
        TransactionInterceptor interceptor = new TransactionInterceptor();
        interceptor.setTransactionAttributeSource(transactionAttributeSource);
        return interceptor;
    }

    @Bean
    @Role(BeanDefinition.ROLE_INFRASTRUCTURE)
    public static BeanFactoryTransactionAttributeSourceAdvisor transactionAdvisor(
            TransactionAttributeSource transactionAttributeSource, TransactionInterceptor transactionInterceptor) {
        BeanFactoryTransactionAttributeSourceAdvisor advisor = new BeanFactoryTransactionAttributeSourceAdvisor();
        advisor.setTransactionAttributeSource(transactionAttributeSource);
        advisor.setAdvice(transactionInterceptor);
        return advisor;
    }

    @Bean
    @Role(BeanDefinition.ROLE_INFRASTRUCTURE)
    public static AnnotationCacheOperationSource cacheOperationSource() {
        return new AnnotationCacheOperationSource();
    }

    // The interceptor resolves the CacheManager bean once all singletons exist.
    @Bean
    @Role(BeanDefinition.ROLE_INFRASTRUCTURE)
    public static CacheInterceptor cacheInterceptor(CacheOperationSource cacheOperationSource) {
        CacheInterceptor interceptor = new CacheInterceptor();
        interceptor.setCacheOperationSources(cacheOperationSource);
        return interceptor;
    }

    @Bean
    @Role(BeanDefinition.ROLE_INFRASTRUCTURE)
    public static BeanFactoryCacheOperationSourceAdvisor cacheAdvisor(
            CacheOperationSource cacheOperationSource, CacheInterceptor cacheInterceptor) {
        BeanFactoryCacheOperationSourceAdvisor advisor = new BeanFactoryCacheOperationSourceAdvisor();
        advisor.setCacheOperationSource(cacheOperationSource);
        advisor.setAdvice(cacheInterceptor);
        return advisor;
    }
}
