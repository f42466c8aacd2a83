package org.esrerank.elasticsearch;

import org.elasticsearch.ElasticsearchStatusException;
import org.elasticsearch.common.xcontent.XContentHelper;
import org.elasticsearch.rest.RestStatus;
import org.elasticsearch.xcontent.XContentBuilder;
import org.elasticsearch.xcontent.XContentFactory;
import org.elasticsearch.xcontent.XContentType;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.ConnectException;
import java.net.HttpURLConnection;
import java.net.SocketTimeoutException;
import java.net.URI;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;

/**
 * The client of {@code esrerank serve}'s {@code POST /v1/rerank}: a query and documents in, one raw cross-encoder
 * score (logit) per document out, in the documents' order. Large windows go as several requests of
 * {@link ServiceSettings#batchSize()} documents. Every failure is an {@link ElasticsearchStatusException} whose
 * message names the service's URL and the cause, so the search's error says what to fix.
 */
final class RerankService {

    /**
     * The status of every failure: 500. Not 502/504, although the service is an upstream: Elasticsearch's clients
     * take those for the node's own failure, retry the search (elasticsearch-py three times, with backoff, so a
     * 10 s timeout became a 40 s wait) and mark the node dead, where the node is well and only the service is not.
     */
    private static final RestStatus FAILED = RestStatus.INTERNAL_SERVER_ERROR;

    /** An answer larger than this is not a rerank answer (1,000 scores take about 60 kB). */
    private static final int MAX_ANSWER_BYTES = 16 * 1024 * 1024;

    private volatile ServiceSettings settings;

    RerankService(ServiceSettings settings) {
        this.settings = settings;
    }

    void update(ServiceSettings settings) {
        this.settings = settings;
    }

    ServiceSettings settings() {
        return settings;
    }

    /**
     * Raw scores of (query, text) for every text, in order.
     *
     * @param checkCancelled run between requests, so a cancelled search stops before the next one
     */
    float[] scores(String query, List<String> texts, Runnable checkCancelled) {
        ServiceSettings current = settings;
        if (current.url().isEmpty()) {
            throw new ElasticsearchStatusException("esrerank rescorer: the node setting [" + ServiceSettings.URL.getKey()
                + "] is not set; add the reranking service's URL to elasticsearch.yml", RestStatus.INTERNAL_SERVER_ERROR);
        }
        float[] scores = new float[texts.size()];
        for (int start = 0; start < texts.size(); start += current.batchSize()) {
            checkCancelled.run();
            int end = Math.min(texts.size(), start + current.batchSize());
            float[] batch = request(current, query, texts.subList(start, end));
            System.arraycopy(batch, 0, scores, start, batch.length);
        }
        return scores;
    }

    private static float[] request(ServiceSettings current, String query, List<String> texts) {
        String url = current.rerankUrl();
        byte[] body = requestBody(query, texts);
        try {
            try {
                return post(current, url, body, texts.size());
            } catch (IOException e) {
                if (e instanceof SocketTimeoutException || e instanceof ConnectException
                    || e instanceof UnknownHostException) {
                    throw e;
                }
                // a pooled keep-alive connection the service closed (it restarted): once more, on a new one;
                // scoring is idempotent
                return post(current, url, body, texts.size());
            }
        } catch (SocketTimeoutException e) {
            throw failure(url, "did not answer within " + current.timeout() + " (" + ServiceSettings.TIMEOUT.getKey()
                + "; connect: " + current.connectTimeout() + ")", FAILED, e);
        } catch (ConnectException | UnknownHostException e) {
            throw failure(url, "cannot be reached (" + e.getMessage() + "); is esrerank serve running there?",
                FAILED, e);
        } catch (IOException e) {
            throw failure(url, "failed: " + e, FAILED, e);
        }
    }

    private static float[] post(ServiceSettings current, String url, byte[] body, int expected) throws IOException {
        // a connection whose answer is read in full goes back to the JDK's keep-alive pool
        HttpURLConnection connection = (HttpURLConnection) URI.create(url).toURL().openConnection();
        boolean answered = false;
        try {
            connection.setConnectTimeout(millis(current.connectTimeout()));
            connection.setReadTimeout(millis(current.timeout()));
            connection.setRequestMethod("POST");
            connection.setDoOutput(true);
            connection.setRequestProperty("Content-Type", "application/json");
            connection.setRequestProperty("Accept", "application/json");
            if (current.apiKey().isEmpty() == false) {
                connection.setRequestProperty("Authorization", "Bearer " + current.apiKey());
            }
            connection.setFixedLengthStreamingMode(body.length);
            try (OutputStream out = connection.getOutputStream()) {
                out.write(body);
            }
            int status = connection.getResponseCode();
            if (status != 200) {
                String answer = "";
                try (InputStream error = connection.getErrorStream()) {
                    if (error != null) {
                        answer = new String(readCapped(error, 2048), StandardCharsets.UTF_8);
                    }
                }
                throw failure(url, status == 401 || status == 403
                    ? "refused the API key (HTTP " + status + "); set " + ServiceSettings.API_KEY.getKey()
                        + " in the keystore and call POST _nodes/reload_secure_settings"
                    : "answered HTTP " + status + ": " + answer.strip(), FAILED, null);
            }
            float[] scores;
            try (InputStream in = connection.getInputStream()) {
                scores = parseScores(url, readCapped(in, MAX_ANSWER_BYTES), expected);
            }
            answered = true;
            return scores;
        } finally {
            if (answered == false) {
                connection.disconnect(); // a failed exchange leaves no socket behind
            }
        }
    }

    private static int millis(org.elasticsearch.core.TimeValue time) {
        return (int) Math.min(Integer.MAX_VALUE, Math.max(1, time.millis()));
    }

    private static ElasticsearchStatusException failure(String url, String cause, RestStatus status, Throwable e) {
        return new ElasticsearchStatusException("esrerank rescorer: the reranking service at " + url + " " + cause,
            status, e);
    }

    private static byte[] requestBody(String query, List<String> texts) {
        try (XContentBuilder builder = XContentFactory.jsonBuilder()) {
            builder.startObject().field("query", query).startArray("documents");
            for (String text : texts) {
                builder.value(text);
            }
            builder.endArray().field("raw_scores", true).field("return_documents", false).endObject();
            return org.elasticsearch.common.bytes.BytesReference.toBytes(
                org.elasticsearch.common.bytes.BytesReference.bytes(builder));
        } catch (IOException e) {
            throw new IllegalStateException("cannot write a rerank request", e);
        }
    }

    /** The Cohere answer's {@code results[*].{index, relevance_score}} back in the documents' order. */
    static float[] parseScores(String url, byte[] answer, int expected) {
        Map<String, Object> map;
        try {
            map = XContentHelper.convertToMap(XContentType.JSON.xContent(), answer, 0, answer.length, false);
        } catch (RuntimeException e) {
            throw failure(url, "answered something that is not JSON: " + e.getMessage(), FAILED, e);
        }
        if (!(map.get("results") instanceof List<?> results)) {
            throw failure(url, "answered JSON without a 'results' list", FAILED, null);
        }
        float[] scores = new float[expected];
        boolean[] seen = new boolean[expected];
        for (Object item : results) {
            if (item instanceof Map<?, ?> result && result.get("index") instanceof Number index
                && result.get("relevance_score") instanceof Number score && index.intValue() >= 0
                && index.intValue() < expected && seen[index.intValue()] == false
                && Float.isFinite(score.floatValue())) {
                scores[index.intValue()] = score.floatValue();
                seen[index.intValue()] = true;
            } else {
                throw failure(url, "answered a malformed result: " + item, FAILED, null);
            }
        }
        if (results.size() != expected) {
            throw failure(url, "answered " + results.size() + " scores for " + expected + " documents",
                FAILED, null);
        }
        return scores;
    }

    private static byte[] readCapped(InputStream in, int cap) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buffer = new byte[8192];
        int read;
        while ((read = in.read(buffer)) != -1) {
            if (out.size() + read > cap) {
                out.write(buffer, 0, cap - out.size());
                break;
            }
            out.write(buffer, 0, read);
        }
        return out.toByteArray();
    }
}
