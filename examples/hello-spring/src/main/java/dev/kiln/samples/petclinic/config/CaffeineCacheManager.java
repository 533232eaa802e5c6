package dev.kiln.samples.petclinic.config;

import com.github.benmanes.caffeine.cache.Caffeine;
import com.github.benmanes.caffeine.cache.CaffeineSpec;
import org.springframework.cache.Cache;
import org.springframework.cache.CacheManager;
import org.springframework.cache.support.AbstractValueAdaptingCache;
import org.springframework.cache.support.SimpleValueWrapper;

import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Callable;

/**
 * Spring caches backed by Caffeine, Spring Boot's default cache provider. Spring 4.3 ships a
 * CaffeineCacheManager in spring-context-support, but Debian builds that jar without it; this is
 * the same adapter, for a fixed set of cache names all built from one Caffeine spec.
 */
public class CaffeineCacheManager implements CacheManager {

    private final Map<String, Cache> caches = new LinkedHashMap<String, Cache>();

    /** @param spec a Caffeine spec such as "maximumSize=500,expireAfterWrite=10m" */
    public CaffeineCacheManager(String spec, String... cacheNames) {
        CaffeineSpec parsed = CaffeineSpec.parse(spec);
        for (String name : cacheNames) {
            caches.put(name, new CaffeineCache(name, Caffeine.from(parsed).build()));
        }
    }

    @Override
    public Cache getCache(String name) {
        return caches.get(name);
    }

    @Override
    public Collection<String> getCacheNames() {
        return Collections.unmodifiableSet(caches.keySet());
    }

    static final class CaffeineCache extends AbstractValueAdaptingCache {

        private final String name;
        private final com.github.benmanes.caffeine.cache.Cache<Object, Object> cache;

        CaffeineCache(String name, com.github.benmanes.caffeine.cache.Cache<Object, Object> cache) {
            super(true);
            this.name = name;
            this.cache = cache;
        }

        @Override
        public String getName() {
            return name;
        }

        @Override
        public Object getNativeCache() {
            return cache;
        }

        @Override
        protected Object lookup(Object key) {
            return cache.getIfPresent(key);
        }

        @Override
        @SuppressWarnings("unchecked")
        public <T> T get(final Object key, final Callable<T> valueLoader) {
            return (T) fromStoreValue(cache.get(key, k -> {
                try {
                    return toStoreValue(valueLoader.call());
                } catch (Exception e) {
                    throw new ValueRetrievalException(key, valueLoader, e);
                }
            }));
        }

        @Override
        public void put(Object key, Object value) {
            cache.put(key, toStoreValue(value));
        }

        @Override
        public ValueWrapper putIfAbsent(Object key, Object value) {
            Object existing = cache.asMap().putIfAbsent(key, toStoreValue(value));
            return existing == null ? null : new SimpleValueWrapper(fromStoreValue(existing));
        }

        @Override
        public void evict(Object key) {
            cache.invalidate(key);
        }

        @Override
        public void clear() {
            cache.invalidateAll();
        }
    }
}
