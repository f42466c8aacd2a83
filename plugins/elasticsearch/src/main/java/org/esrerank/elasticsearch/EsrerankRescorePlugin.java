package org.esrerank.elasticsearch;

import org.elasticsearch.common.settings.Setting;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.ReloadablePlugin;
import org.elasticsearch.plugins.SearchPlugin;

import java.util.List;

/**
 * Adds the {@code esrerank} rescorer: a search's {@code rescore} section names it, and each shard sends its window's
 * (query, text) pairs to an {@code esrerank serve} endpoint and reorders its top hits by the answers.
 *
 * <p>Where the service is and how it is called come only from node settings (elasticsearch.yml) and the keystore
 * ({@link ServiceSettings}); a search request cannot name an address, so a user who may search cannot make a node
 * connect where they choose. The API key is reloadable with {@code POST _nodes/reload_secure_settings}.
 */
public class EsrerankRescorePlugin extends Plugin implements SearchPlugin, ReloadablePlugin {

    private final RerankService service;

    public EsrerankRescorePlugin(Settings settings) {
        this.service = new RerankService(ServiceSettings.from(settings));
    }

    @Override
    public List<Setting<?>> getSettings() {
        return ServiceSettings.ALL;
    }

    @Override
    public void reload(Settings settings) {
        service.update(ServiceSettings.from(settings));
    }

    @Override
    public List<RescorerSpec<?>> getRescorers() {
        return List.of(new RescorerSpec<>(EsrerankRescorerBuilder.NAME,
            in -> new EsrerankRescorerBuilder(in, service),
            parser -> EsrerankRescorerBuilder.fromXContent(parser, service)));
    }
}
