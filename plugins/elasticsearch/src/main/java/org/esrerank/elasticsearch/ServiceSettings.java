package org.esrerank.elasticsearch;

import org.elasticsearch.common.settings.SecureSetting;
import org.elasticsearch.common.settings.SecureString;
import org.elasticsearch.common.settings.Setting;
import org.elasticsearch.common.settings.Setting.Property;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.core.TimeValue;

import java.util.List;

/**
 * The node settings of the rescorer, read once at start and again on {@code _nodes/reload_secure_settings}.
 *
 * @param url           {@code esrerank.service.url}: the service's base URL (e.g. {@code http://127.0.0.1:8080});
 *                      no default, a search naming the rescorer fails until it is set.
 * @param apiKey        {@code esrerank.service.api_key}, a secure setting (keystore only): sent as
 *                      {@code Authorization: Bearer}; empty when the service has no key.
 * @param connectTimeout {@code esrerank.service.connect_timeout}, default 2s: a stopped service fails fast.
 * @param timeout       {@code esrerank.service.timeout}, default 30s: the longest wait for one answer; a window of
 *                      100 pairs on a CPU takes a few seconds, a GPU well under one.
 * @param batchSize     {@code esrerank.service.batch_size}, default 100 documents a request (the service accepts up
 *                      to 1,000); a larger window goes as several requests, one after the other.
 * @param maxWindow     {@code esrerank.rescore.max_window}, default 1000: the largest window_size a search may ask
 *                      for, which bounds the texts a shard holds and the time a search can spend on the service.
 * @param maxTextChars  {@code esrerank.rescore.max_text_chars}, default 20,000: a document's text is cut here, as
 *                      esrerank's client side cuts it (a 512-token pair reads about 2,500 characters).
 */
record ServiceSettings(String url, String apiKey, TimeValue connectTimeout, TimeValue timeout, int batchSize,
                       int maxWindow, int maxTextChars) {

    static final Setting<String> URL = Setting.simpleString("esrerank.service.url", Property.NodeScope);
    static final Setting<SecureString> API_KEY = SecureSetting.secureString("esrerank.service.api_key", null);
    static final Setting<TimeValue> CONNECT_TIMEOUT = Setting.timeSetting("esrerank.service.connect_timeout",
        TimeValue.timeValueSeconds(2), TimeValue.timeValueMillis(1), Property.NodeScope);
    static final Setting<TimeValue> TIMEOUT = Setting.timeSetting("esrerank.service.timeout",
        TimeValue.timeValueSeconds(30), TimeValue.timeValueMillis(1), Property.NodeScope);
    static final Setting<Integer> BATCH_SIZE = Setting.intSetting("esrerank.service.batch_size", 100, 1, 1000,
        Property.NodeScope);
    static final Setting<Integer> MAX_WINDOW = Setting.intSetting("esrerank.rescore.max_window", 1000, 1, 10_000,
        Property.NodeScope);
    static final Setting<Integer> MAX_TEXT_CHARS = Setting.intSetting("esrerank.rescore.max_text_chars", 20_000, 1,
        Property.NodeScope);

    static final List<Setting<?>> ALL = List.of(URL, API_KEY, CONNECT_TIMEOUT, TIMEOUT, BATCH_SIZE, MAX_WINDOW,
        MAX_TEXT_CHARS);

    static ServiceSettings from(Settings settings) {
        String key;
        try (SecureString secure = API_KEY.get(settings)) {
            key = secure.toString();
        }
        String url = URL.get(settings).strip();
        if (url.isEmpty() == false && url.startsWith("http://") == false && url.startsWith("https://") == false) {
            throw new IllegalArgumentException("[" + URL.getKey() + "] must be an http:// or https:// URL, got [" + url + "]");
        }
        try {
            if (url.isEmpty() == false) {
                java.net.URI.create(url).toURL();
            }
        } catch (IllegalArgumentException | java.net.MalformedURLException e) {
            throw new IllegalArgumentException("[" + URL.getKey() + "] is not a URL: " + e.getMessage(), e);
        }
        return new ServiceSettings(url, key, CONNECT_TIMEOUT.get(settings), TIMEOUT.get(settings),
            BATCH_SIZE.get(settings), MAX_WINDOW.get(settings), MAX_TEXT_CHARS.get(settings));
    }

    /** Everything but the API key, which must never reach a log. */
    @Override
    public String toString() {
        return "ServiceSettings[url=" + url + ", apiKey=" + (apiKey.isEmpty() ? "none" : "set") + ", connectTimeout="
            + connectTimeout + ", timeout=" + timeout + ", batchSize=" + batchSize + ", maxWindow=" + maxWindow
            + ", maxTextChars=" + maxTextChars + "]";
    }

    /** The service's Cohere-style route, which answers raw logits with {@code "raw_scores": true}. */
    String rerankUrl() {
        String base = url.endsWith("/") ? url.substring(0, url.length() - 1) : url;
        return base.endsWith("/v1/rerank") ? base : base + "/v1/rerank";
    }
}
