"""The engine-connection setting alone (no server): parsing, what it shows, what it hands the clients.
The live behaviour against secured servers is in tests/pipelines/test_secured_clusters.py."""

import logging
import ssl

import pytest

from esrerank_errors import DataError, InputError
from retrieval.engine_connection import EngineConnection, as_connection, read_secret_file, redact_text
from retrieval.engine_rest import node_urls, permission_error, unreachable_reason
from retrieval.source_fields import mapped_fields, mapping_from_field_caps

SECRET = "Pa55#w0rd/with?odd@chars%A"
IN_URL = "Pa55#w0rd%2Fwith?odd@chars%25A"  # as typed in a URL: '/' and '%' percent-encoded, '#?@' as they are


def test_credentials_in_the_url_are_taken_out_decoded_and_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        connection = EngineConnection.from_url(f"https://admin:{IN_URL}@localhost:9203")
    assert connection.url == "https://localhost:9203"
    assert (connection.username, connection.password) == ("admin", SECRET)
    assert "other users of this machine" in caplog.text and SECRET not in caplog.text and IN_URL not in caplog.text
    assert connection.shown_url == "https://admin:***@localhost:9203"
    # several nodes: the credentials apply to the cluster, every node shown without them
    cluster = EngineConnection.from_url("https://u:p%23q@h1:9200,https://u:p%23q@h2:9200")
    assert cluster.url == "https://h1:9200,https://h2:9200" and cluster.password == "p#q"
    assert cluster.shown_url == "https://u:***@h1:9200,https://u:***@h2:9200"
    with pytest.raises(InputError, match="different credentials"):
        EngineConnection.from_url("https://u:a@h1:9200,https://v:b@h2:9200")


def test_no_secret_in_repr_str_or_scrubbed_text():
    by_password = EngineConnection("https://localhost:9203", username="reader", password=SECRET)
    by_token = EngineConnection("https://localhost:9204", bearer_token="AAEAAWVsYXN0aWMvdG9rZW4")
    by_key = EngineConnection("https://localhost:9204", api_key="key-id:key-secret-value")
    for connection, secret in ((by_password, SECRET), (by_token, by_token.bearer_token),
                               (by_key, by_key.api_key)):
        assert secret not in repr(connection) and secret not in str(connection)
        assert "***" in repr(connection)
        for form in connection.secrets():  # as given, and as the Authorization header carries it
            assert connection.scrub(f"error near {form}!") == "error near ***!"
    assert "reader" in repr(by_password)  # the user name is not a secret: errors name it


def test_one_way_to_authenticate_and_complete_credentials():
    with pytest.raises(InputError, match="one way to authenticate"):
        EngineConnection(username="u", password="p", bearer_token="t")
    with pytest.raises(InputError, match="no password for engine user 'u'"):
        EngineConnection(username="u")
    with pytest.raises(InputError, match="needs a user name"):
        EngineConnection(password="p")
    with pytest.raises(InputError, match="both --client-cert FILE and --client-key FILE"):
        EngineConnection(client_cert=__file__)
    with pytest.raises(InputError, match="holds credentials"):
        EngineConnection("https://u:p@h:9200", username="u", password="p")
    with pytest.raises(DataError, match="--ca-certs: cannot read it"):
        EngineConnection("https://h:9200", ca_certs="/nonexistent/ca.pem")


def test_client_options_are_the_libraries_own():
    plain = as_connection("http://127.0.0.1:9200")
    assert plain.client_options("elasticsearch") == {}  # an unsecured cluster: nothing added
    user = EngineConnection("https://h:9200", username="u", password=SECRET)
    es = user.client_options("elasticsearch")
    assert es["basic_auth"] == ("u", SECRET) and isinstance(es["ssl_context"], ssl.SSLContext)
    assert es["ssl_context"].verify_mode == ssl.CERT_REQUIRED and es["ssl_context"].check_hostname
    assert user.client_options("opensearch")["http_auth"] == ("u", SECRET)
    token = EngineConnection("https://h:9200", bearer_token="tok")
    assert token.client_options("elasticsearch")["bearer_auth"] == "tok"
    assert token.client_options("opensearch")["headers"] == {"authorization": "Bearer tok"}
    assert EngineConnection("https://h", api_key="id:k").client_options("elasticsearch")["api_key"] == ("id", "k")
    assert EngineConnection("https://h", api_key="ZW5jb2RlZA==").client_options("elasticsearch")["api_key"] == \
        "ZW5jb2RlZA=="
    with pytest.raises(InputError, match="OpenSearch has no API keys"):
        EngineConnection("https://h", api_key="id:k").client_options("opensearch")
    # given TLS options go to the clients' own, so --ca-certs trusts that CA alone
    insecure = EngineConnection("https://h:9200", verify_certs=False).client_options("opensearch")
    assert insecure["verify_certs"] is False and "ssl_context" not in insecure
    import certifi

    with_ca = EngineConnection("https://h:9200", ca_certs=certifi.where()).client_options("elasticsearch")
    assert with_ca["ca_certs"] == certifi.where() and with_ca["verify_certs"] is True
    with pytest.raises(DataError, match="not a PEM file of CA certificates"):
        EngineConnection("https://h:9200", ca_certs=__file__).client_options("elasticsearch")


def test_secret_files_are_read_without_showing_them(tmp_path):
    good = tmp_path / "password"
    good.write_text(f"{SECRET}\n")
    assert read_secret_file(str(good), "password") == SECRET
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(DataError, match=f"{empty}: the password file is empty"):
        read_secret_file(str(empty), "password")
    with pytest.raises(DataError, match="cannot read the token file: No such file"):
        read_secret_file(str(tmp_path / "missing"), "token")


def test_url_edge_cases_keep_the_secret_out():
    comma = EngineConnection.from_url("https://u:p,w@h1:9200,https://u:p,w@h2:9200")
    assert (comma.url, comma.password) == ("https://h1:9200,https://h2:9200", "p,w")
    assert EngineConnection.from_url("HTTPS://u:pw@h:9200").secure  # a scheme in capitals is still TLS
    path_at = EngineConnection.from_url("http://h:9200/pre@x")  # an @ after a / is the path's
    assert (path_at.url, path_at.username) == ("http://h:9200/pre@x", None)
    with pytest.raises(InputError, match="mix http:// and https://"):
        EngineConnection("http://h1:9200,https://h2:9200")
    for typo in ("admin:Pa55#word@localhost:9200", "https//admin:Pa55#word@localhost:9200"):
        with pytest.raises(DataError) as refused:
            node_urls(EngineConnection.from_url(typo).url)
        assert "Pa55" not in str(refused.value) and "***@localhost" in str(refused.value)
    assert redact_text("https://a:b@h1,https://a:b@h2") == "https://***@h1,https://***@h2"


# messages as the clients gave them against the CI's secured servers (OpenSearch 2.19.1, Elasticsearch 9.1.0)
SECURE = EngineConnection("https://localhost:9203", username="reader", password="pw")
PLAIN = EngineConnection("http://localhost:9203")


@pytest.mark.parametrize("message, connection, expected", [
    ("Connection error caused by: SSLError([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to "
     "get local issuer certificate (_ssl.c:1006))", SECURE, "not trusted (unable to get local issuer certificate): "
     "give the CA that signed it with --ca-certs FILE"),
    ("SSLError([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: IP address mismatch, certificate is not "
     "valid for '127.0.0.1'. (_ssl.c:1006))", SECURE, "not valid for this host name (IP address mismatch"),
    ("TLS error | hostname '127.0.0.1' doesn't match 'localhost' | hostname '127.0.0.1' doesn't match 'localhost'",
     SECURE, "not valid for this host name (hostname '127.0.0.1' doesn't match 'localhost')"),
    ("ConnectionError(('Connection aborted.', RemoteDisconnected('Remote end closed connection without "
     "response')))", PLAIN, "use https://"),
    ("ConnectionError(('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer')))", PLAIN,
     "use https://"),
    ("SSLError([SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006))", SECURE,
     "does not speak TLS on this port: use http://"),
    ("SSLError([SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580))", SECURE,
     "--client-cert FILE --client-key FILE"),
    ("Connection error caused by: NewConnectionError(HTTPConnection(host='localhost', port=9299): Failed to "
     "establish a new connection: [Errno 111] Connection refused) | [Errno 111] Connection refused", PLAIN,
     "[Errno 111] Connection refused"),
])
def test_unreachable_reasons_say_what_to_do(message, connection, expected):
    reason = unreachable_reason(message, connection)
    assert expected in reason and len(reason) < 300


def test_permission_errors_name_user_privilege_and_index():
    opensearch = permission_error("opensearch", SECURE.shown_url, "security_exception: no permissions for "
                                  "[indices:admin/mappings/get] and User [name=reader, backend_roles=[], "
                                  "requestedTenant=null]", "/sec-test/_mapping")
    assert (opensearch.privilege, opensearch.index, opensearch.status) == ("indices:admin/mappings/get", "sec-test",
                                                                          403)
    assert "refused user 'reader' the privilege indices:admin/mappings/get on sec-test" in str(opensearch)
    elasticsearch = permission_error("elasticsearch", SECURE.shown_url, "security_exception: action "
                                     "[indices:admin/mappings/get] is unauthorized for user [reader] with effective "
                                     "roles [esrerank_reader] on indices [sec-test], this action is granted by the "
                                     "index privileges [view_index_metadata,manage,all]", "/sec-test/_mapping")
    assert "refused user 'reader' the privilege indices:admin/mappings/get on sec-test (granted by " \
           "view_index_metadata, manage, all)" in str(elasticsearch)
    cluster = permission_error("opensearch", SECURE.shown_url, "no permissions for [cluster:admin/opensearch/ml/"
                               "connectors/search] and User [name=reader]", "/_plugins/_ml/connectors/_search")
    assert cluster.index is None and cluster.privilege == "cluster:admin/opensearch/ml/connectors/search"


def test_mapping_from_field_caps_keeps_types_objects_multi_fields_and_meta():
    caps = {"indices": ["a", "b"], "fields": {
        "_id": {"_id": {"type": "_id", "metadata_field": True}},
        "contents": {"text": {"type": "text", "meta": {"analysis": ["client"], "k1": ["0.9"]}}},
        "title": {"text": {"type": "text"}}, "title.raw": {"keyword": {"type": "keyword"}},
        "author": {"object": {"type": "object"}}, "author.name": {"text": {"type": "text"}},
        "mixed": {"keyword": {"type": "keyword"}, "text": {"type": "text"}},
    }}
    mapping = mapping_from_field_caps(caps, "contents")
    fields = mapped_fields(mapping)
    assert {path: (f.type, f.parent) for path, f in fields.items()} == {
        "contents": ("text", None), "title": ("text", None), "title.raw": ("keyword", "title"),
        "author": ("object", None), "author.name": ("text", None), "mixed": ("text", None)}
    assert mapping["_meta"] == {"esrerank": {"analysis": "client", "k1": "0.9"}}
