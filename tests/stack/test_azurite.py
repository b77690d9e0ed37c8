"""The storage emulator keeps text as it was sent, as Azure Storage does (Azurite 3.35 did not: see
dev/azurite.py). A queue message whose body reaches the server in two pieces, split inside a multi-byte
character, must come back unchanged; the app writes raw UTF-8 messages, so this decides whether a retry
copy of a request with non-ASCII text is the request.
"""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from azure.storage.queue import QueueClient, QueueSasPermissions, generate_queue_sas

from dev import layout

CHARS = {"two-byte": "\u00e9", "three-byte": "\u20ac", "four-byte": "\U0001f600"}


def _send_in_two_pieces(queue: QueueClient, text: str) -> None:
    """Put Message over a plain socket, the body written in two writes that split a character."""
    sas = generate_queue_sas(queue.account_name, queue.queue_name, queue.credential.account_key,
                             permission=QueueSasPermissions(add=True), expiry=datetime.now(UTC) + timedelta(hours=1))
    url = urlsplit(queue.url)
    body = f"<?xml version='1.0' encoding='utf-8'?><QueueMessage><MessageText>{text}</MessageText></QueueMessage>"
    data = body.encode()
    split = data.index(text[-1].encode()) + 1  # inside the last multi-byte character
    head = (f"POST {url.path}/messages?{sas} HTTP/1.1\r\nHost: {url.netloc}\r\nx-ms-version: 2021-08-06\r\n"
            f"Content-Type: application/xml\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as connection:
        stream = ssl.create_default_context().wrap_socket(connection, server_hostname=url.hostname) \
            if url.scheme == "https" else connection
        stream.sendall(head + data[:split])
        time.sleep(0.3)  # not a race: it only makes the two pieces two reads on the server
        stream.sendall(data[split:])
        answer = stream.recv(4096).decode("latin-1")
    assert answer.startswith("HTTP/1.1 201"), answer[:300]


@pytest.mark.parametrize("char", CHARS.values(), ids=CHARS.keys())
def test_a_message_split_inside_a_character_comes_back_as_sent(stack, char):
    queue = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, f"utf8-{uuid.uuid4().hex[:12]}")
    queue.create_queue()
    text = "request " + char * 50
    _send_in_two_pieces(queue, text)
    assert [m.content for m in queue.receive_messages()] == [text]
