"""The engine-connection setting alone (no server): parsing, what it shows, what it hands the clients.
The live behaviour against secured servers is in tests/pipelines/test_secured_clusters.py."""

import logging
import ssl

import pytest

from esrerank_errors import DataError, InputError
from retrieval.engine_connection import EngineConnection, as_connection, read_secret_file

SECRET = "Pa55#w0rd/with?odd@chars%41"


def test_credentials_in_the_url_are_taken_out_decoded_and_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        connection = EngineConnection.from_url(f"https://admin:{SECRET}@localhost:9203")
    assert connection.url == "https://localhost:9203"
    assert (connection.username, connection.password) == ("admin", SECRET.replace("%41", "A"))
    assert "other users of this machine" in caplog.text and SECRET not in caplog.text
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
    insecure = EngineConnection("https://h:9200", verify_certs=False).client_options("opensearch")["ssl_context"]
    assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname


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
