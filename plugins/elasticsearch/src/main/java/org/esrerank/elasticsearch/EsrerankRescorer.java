package org.esrerank.elasticsearch;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.apache.lucene.index.LeafReaderContext;
import org.apache.lucene.index.ReaderUtil;
import org.apache.lucene.search.Explanation;
import org.apache.lucene.search.IndexSearcher;
import org.apache.lucene.search.ScoreDoc;
import org.apache.lucene.search.TopDocs;
import org.elasticsearch.tasks.TaskCancelledException;
import org.elasticsearch.search.lookup.SourceProvider;
import org.elasticsearch.search.rescore.RescoreContext;
import org.elasticsearch.search.rescore.Rescorer;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * Rescores one shard's window: reads the window's texts from {@code _source} (only the window's, so a shard holds
 * no more than window_size texts), asks the service for their scores and returns the window sorted by the new
 * score (score descending, then doc id, as Lucene's rescorers sort).
 */
final class EsrerankRescorer implements Rescorer {

    static final EsrerankRescorer INSTANCE = new EsrerankRescorer();
    private static final Logger logger = LogManager.getLogger(EsrerankRescorer.class);

    private EsrerankRescorer() {}

    static final class Context extends RescoreContext {
        final RerankService service;
        final String query;
        final List<String> fields;
        final EsrerankRescorerBuilder.ScoreMode scoreMode;
        final float queryWeight;
        final float rescoreQueryWeight;
        final boolean ignoreFailure;
        final int maxTextChars;
        final SourceProvider sources;

        Context(int windowSize, RerankService service, String query, List<String> fields,
                EsrerankRescorerBuilder.ScoreMode scoreMode, float queryWeight, float rescoreQueryWeight,
                boolean ignoreFailure, int maxTextChars, SourceProvider sources) {
            super(windowSize, INSTANCE);
            this.service = service;
            this.query = query;
            this.fields = fields;
            this.scoreMode = scoreMode;
            this.queryWeight = queryWeight;
            this.rescoreQueryWeight = rescoreQueryWeight;
            this.ignoreFailure = ignoreFailure;
            this.maxTextChars = maxTextChars;
            this.sources = sources;
        }

        float combine(float firstStage, float crossEncoder) {
            return scoreMode == EsrerankRescorerBuilder.ScoreMode.REPLACE ? crossEncoder
                : queryWeight * firstStage + rescoreQueryWeight * crossEncoder;
        }
    }

    @Override
    public TopDocs rescore(TopDocs topDocs, IndexSearcher searcher, RescoreContext rescoreContext) throws IOException {
        Context context = (Context) rescoreContext;
        if (topDocs == null || topDocs.scoreDocs.length == 0) {
            return topDocs;
        }
        ScoreDoc[] window = Arrays.copyOf(topDocs.scoreDocs, Math.min(topDocs.scoreDocs.length, context.getWindowSize()));
        List<String> texts = texts(searcher, context, window);
        float[] scores;
        try {
            scores = context.service.scores(context.query, texts, context::checkCancellation);
        } catch (TaskCancelledException e) {
            throw e; // a cancelled search stops; it is not the service's failure
        } catch (RuntimeException e) {
            if (context.ignoreFailure == false) {
                throw e;
            }
            logger.warn("esrerank rescorer: keeping the first-stage order (ignore_failure): {}", e.getMessage());
            return topDocs;
        }
        ScoreDoc[] rescored = new ScoreDoc[window.length];
        Set<Integer> docs = new HashSet<>();
        for (int i = 0; i < window.length; i++) {
            rescored[i] = new ScoreDoc(window[i].doc, context.combine(window[i].score, scores[i]), window[i].shardIndex);
            docs.add(window[i].doc);
        }
        Arrays.sort(rescored, Comparator.<ScoreDoc>comparingDouble(d -> -d.score).thenComparingInt(d -> d.doc));
        context.setRescoredDocs(docs);
        // the request asked for from + size <= window_size (EsrerankRescorerBuilder.validate), so what lies beyond
        // the window is never returned; dropping it keeps every returned hit a reranked one
        return new TopDocs(topDocs.totalHits, rescored);
    }

    /** The texts of the window's documents, in the window's order, read in doc id order (forward on disk). */
    private static List<String> texts(IndexSearcher searcher, Context context, ScoreDoc[] window) throws IOException {
        Integer[] order = new Integer[window.length];
        for (int i = 0; i < order.length; i++) {
            order[i] = i;
        }
        Arrays.sort(order, Comparator.comparingInt(i -> window[i].doc));
        List<LeafReaderContext> leaves = searcher.getIndexReader().leaves();
        String[] texts = new String[window.length];
        for (int i : order) {
            texts[i] = text(leaves, context, window[i].doc);
        }
        return Arrays.asList(texts);
    }

    private static String text(List<LeafReaderContext> leaves, Context context, int doc) throws IOException {
        LeafReaderContext leaf = leaves.get(ReaderUtil.subIndex(doc, leaves));
        return SourceText.join(context.sources.getSource(leaf, doc - leaf.docBase).source(), context.fields,
            context.maxTextChars);
    }

    @Override
    public Explanation explain(int topLevelDocId, IndexSearcher searcher, RescoreContext rescoreContext,
                               Explanation sourceExplanation) throws IOException {
        Context context = (Context) rescoreContext;
        if (context.getRescoredDocs() == null || context.isRescored(topLevelDocId) == false) {
            return sourceExplanation; // not rescored: beyond the window, or the first-stage order was kept
        }
        String text = text(searcher.getIndexReader().leaves(), context, topLevelDocId);
        float crossEncoder;
        try {
            crossEncoder = context.service.scores(context.query, List.of(text), () -> {})[0];
        } catch (RuntimeException e) {
            if (context.ignoreFailure == false) {
                throw e;
            }
            return sourceExplanation;
        }
        float firstStage = sourceExplanation.getValue().floatValue();
        List<Explanation> parts = new ArrayList<>();
        parts.add(Explanation.match(crossEncoder, "cross-encoder score from esrerank serve, fields " + context.fields));
        if (context.scoreMode == EsrerankRescorerBuilder.ScoreMode.TOTAL) {
            parts.add(Explanation.match(context.queryWeight * firstStage, "first stage x query_weight " + context.queryWeight,
                sourceExplanation));
            return Explanation.match(context.combine(firstStage, crossEncoder), "esrerank rescore, score_mode total "
                + "(cross-encoder x " + context.rescoreQueryWeight + " + first stage x " + context.queryWeight + ")", parts);
        }
        return Explanation.match(crossEncoder, "esrerank rescore, score_mode replace", parts);
    }
}
