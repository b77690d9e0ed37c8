"""Both forms of the Functions storage connection resolve to the right service endpoints."""

from __future__ import annotations

import pytest

from shared.azure.storage import StorageSettingsError, queue_service, table_service


def test_connection_string_form():
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    assert queue_service(env).url.startswith("http://127.0.0.1:10001/devstoreaccount1")
    assert table_service(env).url.startswith("http://127.0.0.1:10002/devstoreaccount1")


def test_identity_based_form_by_account_name_uses_no_key():
    env = {"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__clientId": "client-1"}
    queues = queue_service(env)
    assert queues.url == "https://acct.queue.core.windows.net/"
    assert table_service(env).url == "https://acct.table.core.windows.net"
    assert type(queues.credential).__name__ == "ManagedIdentityCredential"


def test_identity_based_form_by_service_uri():
    env = {"AzureWebJobsStorage__queueServiceUri": "https://q.example.net",
           "AzureWebJobsStorage__tableServiceUri": "https://t.example.net"}
    assert queue_service(env).url.startswith("https://q.example.net")
    assert table_service(env).url.startswith("https://t.example.net")


def test_missing_storage_settings_name_the_setting():
    with pytest.raises(StorageSettingsError, match="AzureWebJobsStorage__queueServiceUri"):
        queue_service({})
