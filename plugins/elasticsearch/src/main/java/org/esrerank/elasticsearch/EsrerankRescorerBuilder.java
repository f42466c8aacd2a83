package org.esrerank.elasticsearch;

import org.elasticsearch.TransportVersion;
import org.elasticsearch.action.ActionRequestValidationException;
import org.elasticsearch.common.io.stream.StreamInput;
import org.elasticsearch.common.io.stream.StreamOutput;
import org.elasticsearch.index.query.QueryRewriteContext;
import org.elasticsearch.index.query.SearchExecutionContext;
import org.elasticsearch.search.builder.SearchSourceBuilder;
import org.elasticsearch.search.rescore.RescoreContext;
import org.elasticsearch.search.rescore.RescorerBuilder;
import org.elasticsearch.xcontent.XContentBuilder;
import org.elasticsearch.xcontent.XContentParser;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;

import static org.elasticsearch.action.ValidateActions.addValidationError;

/**
 * The {@code esrerank} section of a search's {@code rescore}:
 *
 * <pre>
 * "rescore": {
 *   "window_size": 100,
 *   "esrerank": {
 *     "query": "what the user typed",      // required: the text the cross-encoder reads with each document
 *     "fields": ["title", "text"],          // required: _source fields, joined with a space in this order
 *     "score_mode": "replace",              // replace (default): the cross-encoder's score;
 *                                           // total: query_weight * first-stage + rescore_query_weight * cross-encoder
 *     "query_weight": 1.0, "rescore_query_weight": 1.0,   // for total, as the query rescorer's
 *     "ignore_failure": false               // true: when the service fails, keep the first-stage order
 *   }
 * }
 * </pre>
 *
 * The window is per shard, as for every Elasticsearch rescorer; the hits of a shard's window come back reranked and
 * above nothing else (a search must ask for {@code from + size <= window_size}). The service's address, key, timeouts
 * and the largest window are node settings ({@link ServiceSettings}); a request that names one is refused.
 */
public final class EsrerankRescorerBuilder extends RescorerBuilder<EsrerankRescorerBuilder> {

    public static final String NAME = "esrerank";

    enum ScoreMode { REPLACE, TOTAL }

    private static final Set<String> OPTIONS = Set.of("query", "fields", "score_mode", "query_weight",
        "rescore_query_weight", "ignore_failure");
    /** Options of the service itself, which only node settings may give. */
    private static final Set<String> NODE_ONLY = Set.of("url", "service_url", "endpoint", "host", "api_key",
        "timeout", "connect_timeout", "batch_size", "max_window");

    private final RerankService service;
    private final String query;
    private final List<String> fields;
    private final ScoreMode scoreMode;
    private final float queryWeight;
    private final float rescoreQueryWeight;
    private final boolean ignoreFailure;

    EsrerankRescorerBuilder(RerankService service, String query, List<String> fields, ScoreMode scoreMode,
                            float queryWeight, float rescoreQueryWeight, boolean ignoreFailure) {
        this.service = service;
        this.query = query;
        this.fields = List.copyOf(fields);
        this.scoreMode = scoreMode;
        this.queryWeight = queryWeight;
        this.rescoreQueryWeight = rescoreQueryWeight;
        this.ignoreFailure = ignoreFailure;
    }

    EsrerankRescorerBuilder(StreamInput in, RerankService service) throws IOException {
        super(in);
        this.service = service;
        this.query = in.readString();
        this.fields = in.readStringCollectionAsImmutableList();
        this.scoreMode = in.readEnum(ScoreMode.class);
        this.queryWeight = in.readFloat();
        this.rescoreQueryWeight = in.readFloat();
        this.ignoreFailure = in.readBoolean();
    }

    @Override
    protected void doWriteTo(StreamOutput out) throws IOException {
        out.writeString(query);
        out.writeStringCollection(fields);
        out.writeEnum(scoreMode);
        out.writeFloat(queryWeight);
        out.writeFloat(rescoreQueryWeight);
        out.writeBoolean(ignoreFailure);
    }

    static EsrerankRescorerBuilder fromXContent(XContentParser parser, RerankService service) throws IOException {
        Map<String, Object> body = parser.map();
        for (String key : body.keySet()) {
            if (NODE_ONLY.contains(key)) {
                throw new IllegalArgumentException("[" + NAME + "] [" + key + "] cannot be set in a search request: "
                    + "the reranking service's address, key, timeouts and limits are node settings (esrerank.service.*,"
                    + " esrerank.rescore.*) so that a user who may search cannot make a node connect where they choose");
            }
            if (OPTIONS.contains(key) == false) {
                throw new IllegalArgumentException("[" + NAME + "] unknown option [" + key + "]; the options are "
                    + String.join(", ", OPTIONS.stream().sorted().toList()));
            }
        }
        if (!(body.get("query") instanceof String query) || query.isBlank()) {
            throw new IllegalArgumentException("[" + NAME + "] needs [query]: the query text, as a string");
        }
        List<String> fields = new ArrayList<>();
        Object named = body.get("fields");
        if (named instanceof String one) {
            fields.add(one);
        } else if (named instanceof List<?> list) {
            for (Object field : list) {
                if (!(field instanceof String name) || name.isBlank()) {
                    throw new IllegalArgumentException("[" + NAME + "] [fields] must be field names, got " + field);
                }
                fields.add(name);
            }
        }
        if (fields.isEmpty()) {
            throw new IllegalArgumentException("[" + NAME + "] needs [fields]: the _source fields whose text the "
                + "cross-encoder reads, e.g. [\"title\", \"text\"]");
        }
        ScoreMode mode;
        String modeName = String.valueOf(body.getOrDefault("score_mode", "replace"));
        try {
            mode = ScoreMode.valueOf(modeName.toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("[" + NAME + "] [score_mode] is replace or total, got [" + modeName + "]");
        }
        return new EsrerankRescorerBuilder(service, query, fields, mode, number(body, "query_weight"),
            number(body, "rescore_query_weight"), flag(body, "ignore_failure"));
    }

    private static float number(Map<String, Object> body, String key) {
        Object value = body.getOrDefault(key, 1.0f);
        if (!(value instanceof Number number) || !Float.isFinite(number.floatValue())) {
            throw new IllegalArgumentException("[" + NAME + "] [" + key + "] must be a number, got " + value);
        }
        return number.floatValue();
    }

    private static boolean flag(Map<String, Object> body, String key) {
        Object value = body.getOrDefault(key, false);
        if (!(value instanceof Boolean flag)) {
            throw new IllegalArgumentException("[" + NAME + "] [" + key + "] must be true or false, got " + value);
        }
        return flag;
    }

    @Override
    protected void doXContent(XContentBuilder builder, Params params) throws IOException {
        builder.startObject(NAME);
        builder.field("query", query);
        builder.field("fields", fields);
        builder.field("score_mode", scoreMode.name().toLowerCase(Locale.ROOT));
        builder.field("query_weight", queryWeight);
        builder.field("rescore_query_weight", rescoreQueryWeight);
        builder.field("ignore_failure", ignoreFailure);
        builder.endObject();
    }

    @Override
    public ActionRequestValidationException validate(SearchSourceBuilder source,
                                                     ActionRequestValidationException validationException) {
        validationException = super.validate(source, validationException);
        int window = windowSize() == null ? DEFAULT_WINDOW_SIZE : windowSize();
        int from = Math.max(0, source.from());
        int size = source.size() < 0 ? 10 : source.size();
        if (from + size > window) {
            validationException = addValidationError("[" + NAME + "] rescorer: from + size (" + (from + size)
                + ") is larger than window_size (" + window + "); only the window is reranked, so ask for at most "
                + window + " hits or raise window_size", validationException);
        }
        return validationException;
    }

    @Override
    protected RescoreContext innerBuildContext(int windowSize, SearchExecutionContext context) throws IOException {
        ServiceSettings settings = service.settings();
        if (windowSize > settings.maxWindow()) {
            throw new IllegalArgumentException("[" + NAME + "] window_size " + windowSize + " is larger than the node's "
                + ServiceSettings.MAX_WINDOW.getKey() + " (" + settings.maxWindow() + ")");
        }
        if (context.isSourceEnabled() == false) {
            throw new IllegalArgumentException("[" + NAME + "] index [" + context.index().getName() + "] does not keep "
                + "_source; the rescorer reads the documents' text from it");
        }
        for (String field : fields) {
            if (context.isFieldMapped(field) == false && context.getMatchingFieldNames(field + ".*").isEmpty()) {
                throw new IllegalArgumentException("[" + NAME + "] index [" + context.index().getName()
                    + "] has no field [" + field + "]");
            }
        }
        return new EsrerankRescorer.Context(windowSize, service, query, fields, scoreMode, queryWeight,
            rescoreQueryWeight, ignoreFailure, settings.maxTextChars(), context.createSourceProvider());
    }

    @Override
    public RescorerBuilder<EsrerankRescorerBuilder> rewrite(QueryRewriteContext ctx) {
        return this;
    }

    @Override
    public String getWriteableName() {
        return NAME;
    }

    @Override
    public TransportVersion getMinimalSupportedVersion() {
        return TransportVersion.zero();
    }

    @Override
    public boolean equals(Object other) {
        if (super.equals(other) == false) {
            return false;
        }
        EsrerankRescorerBuilder that = (EsrerankRescorerBuilder) other;
        return query.equals(that.query) && fields.equals(that.fields) && scoreMode == that.scoreMode
            && Float.compare(queryWeight, that.queryWeight) == 0
            && Float.compare(rescoreQueryWeight, that.rescoreQueryWeight) == 0
            && ignoreFailure == that.ignoreFailure;
    }

    @Override
    public int hashCode() {
        return Objects.hash(super.hashCode(), query, fields, scoreMode, queryWeight, rescoreQueryWeight, ignoreFailure);
    }
}
