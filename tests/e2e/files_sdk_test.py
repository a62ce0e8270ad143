"""Files through the official `openai` SDK, changed only in `base_url` and `api_key`:
`client.files.create` (multipart upload), `list` (with the SDK's own paging), `retrieve`,
`content` (the exact bytes, a binary PDF among them) and `delete`, against the real gateway
(see conftest.py).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import openai
import pytest
from openai import OpenAI

REPORT_PDF = Path(__file__).resolve().parents[2] / "crates/proxima/tests/data/report.pdf"


@pytest.fixture(scope="module")
def client(gateway) -> OpenAI:
    return OpenAI(base_url=gateway.base_url, api_key=gateway.master_key, max_retries=0)


def test_files_upload_list_retrieve_content_delete(client):
    tag = uuid.uuid4().hex
    text = f"Ada Lovelace wrote the first program. {tag}\n".encode()
    notes = client.files.create(file=(f"notes-{tag}.txt", text), purpose="assistants")
    assert notes.id.startswith("file-") and notes.object == "file"
    assert (notes.bytes, notes.filename, notes.purpose) == (
        len(text),
        f"notes-{tag}.txt",
        "assistants",
    )
    assert notes.status == "processed" and notes.created_at > 0

    pdf = REPORT_PDF.read_bytes()
    with REPORT_PDF.open("rb") as handle:
        report = client.files.create(file=handle, purpose="user_data")
    assert (report.filename, report.bytes, report.purpose) == ("report.pdf", len(pdf), "user_data")

    assert client.files.retrieve(notes.id) == notes
    content = client.files.content(report.id)
    assert content.content == pdf
    assert content.response.headers["content-type"] == "application/pdf"
    assert client.files.content(notes.id).text == text.decode()

    # Newest first by default; filtered by purpose; and the SDK's own paging (`after`) walks
    # every page of one file without repeating one.
    newest = [f.id for f in client.files.list()]
    assert newest.index(report.id) < newest.index(notes.id)
    assistants = [f.id for f in client.files.list(purpose="assistants")]
    assert notes.id in assistants and report.id not in assistants
    paged = [f.id for f in client.files.list(limit=1, order="asc")]
    assert len(paged) == len(set(paged)) == len(newest)
    assert paged.index(notes.id) < paged.index(report.id)

    deleted = client.files.delete(notes.id)
    assert (deleted.id, deleted.deleted) == (notes.id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(notes.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(notes.id)
    assert notes.id not in [f.id for f in client.files.list()]
    client.files.delete(report.id)


def test_an_unsupported_purpose_is_a_bad_request_naming_it(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("a.txt", b"hello"), purpose="memories")
    assert refused.value.status_code == 400
    assert refused.value.param == "purpose"
    assert "user_data" in refused.value.message
