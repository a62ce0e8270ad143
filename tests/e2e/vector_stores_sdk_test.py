"""Vector stores through the official `openai` SDK, changed only in `base_url` and `api_key`:
files uploaded once (`client.files`), stores made from them (`client.vector_stores`), ingestion
in the background (`create_and_poll`, `upload_and_poll`, file batches), and search with
`max_num_results`, attribute `filters` and `ranking_options`, each tenant behind its wall.
"""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import openai
import pytest
from openai import OpenAI

REPO = Path(__file__).resolve().parents[2]


def _team_client(gateway, team: str) -> OpenAI:
    """A client with a new virtual key of a new team `team-...`."""
    name = f"{team}-{uuid.uuid4().hex[:8]}"
    gateway.admin("POST", "/admin/teams", {"name": name})
    created = gateway.admin("POST", "/admin/keys", {"name": f"key-{name}", "team": name})
    return OpenAI(base_url=gateway.base_url, api_key=created["key"], max_retries=0)


@pytest.fixture(scope="module")
def red(gateway) -> OpenAI:
    return _team_client(gateway, "red")


@pytest.fixture(scope="module")
def blue(gateway) -> OpenAI:
    return _team_client(gateway, "blue")


def _long_minutes() -> str:
    """About 12,000 words of meeting minutes with one fact in the middle."""
    filler = [
        "The committee reviewed the quarterly figures and found them in order.",
        "Several members asked about travel expenses and the new office lease.",
        "A long discussion followed on the merits of the proposed software upgrade.",
        "Minutes of the previous meeting were approved without amendment.",
    ]
    sentences, words, i = [], 0, 0
    while words < 12_000:
        if words >= 6_000 and not any("Zanzibar" in s for s in sentences):
            sentences.append("The spare key to the archive room is kept in the blue Zanzibar box.")
        sentences.append(filler[i % len(filler)])
        words += len(filler[i % len(filler)].split())
        i += 1
    return " ".join(sentences)


def _upload(client: OpenAI, name: str, content: bytes) -> str:
    return client.files.create(file=(name, io.BytesIO(content)), purpose="assistants").id


def test_a_fact_in_a_long_file_comes_back_as_a_chunk(red):
    document = _long_minutes()
    minutes = _upload(red, "minutes.txt", document.encode())
    store = red.vector_stores.create(name="office", file_ids=[minutes], metadata={"dept": "ops"})
    assert store.id.startswith("vs_") and store.name == "office"
    assert store.metadata == {"dept": "ops"}
    # Counts are true from the first answer on.
    counts = store.file_counts
    assert counts.total == 1 and counts.in_progress + counts.completed + counts.failed == 1

    deadline = time.monotonic() + 240
    while red.vector_stores.retrieve(store.id).file_counts.in_progress and time.monotonic() < deadline:
        time.sleep(0.1)
    store = red.vector_stores.retrieve(store.id)
    assert store.status == "completed" and store.file_counts.completed == 1

    page = red.vector_stores.search(
        store.id, query="Where is the spare key to the archive room kept?", max_num_results=3
    )
    results = list(page)
    assert 1 <= len(results) <= 3
    top = results[0]
    assert top.file_id == minutes and top.filename == "minutes.txt"
    text = top.content[0].text
    assert "blue Zanzibar box" in text
    assert len(text) < len(document) / 20, "a chunk, not the whole file"
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


def test_pdf_text_is_searchable_and_a_scanned_pdf_says_why_it_failed(red):
    data = REPO / "crates/proxima/tests/data"
    store = red.vector_stores.create(name="reports")
    report = red.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("report.pdf", io.BytesIO((data / "report.pdf").read_bytes()))
    )
    assert report.status == "completed", report.last_error
    results = list(red.vector_stores.search(store.id, query="launch code of project Osprey"))
    assert results and results[0].filename == "report.pdf"
    assert "falcon-7" in results[0].content[0].text

    scanned = red.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("scan.pdf", io.BytesIO((data / "scanned.pdf").read_bytes()))
    )
    assert scanned.status == "failed"
    assert "no text layer" in scanned.last_error.message


def test_filters_and_result_counts(red):
    store = red.vector_stores.create(name="policies")
    for name, region, year, text in [
        ("eu.txt", "eu", 2024, "Refunds are paid within 14 days of the return arriving."),
        ("us.txt", "us", 2023, "Refunds are paid within 30 days once the parcel is scanned."),
    ]:
        file = red.vector_stores.files.create_and_poll(
            vector_store_id=store.id,
            file_id=_upload(red, name, text.encode()),
            attributes={"region": region, "year": year},
        )
        assert file.status == "completed" and file.attributes == {"region": region, "year": year}

    query = "how long until refunds are paid"
    assert len(list(red.vector_stores.search(store.id, query=query))) == 2
    assert len(list(red.vector_stores.search(store.id, query=query, max_num_results=1))) == 1
    eu = list(
        red.vector_stores.search(
            store.id, query=query, filters={"type": "eq", "key": "region", "value": "eu"}
        )
    )
    assert [r.filename for r in eu] == ["eu.txt"]
    newer = list(
        red.vector_stores.search(
            store.id,
            query=query,
            filters={
                "type": "and",
                "filters": [
                    {"type": "gte", "key": "year", "value": 2023},
                    {"type": "ne", "key": "region", "value": "eu"},
                ],
            },
        )
    )
    assert [r.filename for r in newer] == ["us.txt"]
    strict = red.vector_stores.search(
        store.id, query=query, ranking_options={"score_threshold": 0.99}
    )
    assert all(r.score >= 0.99 for r in strict)
    with pytest.raises(openai.BadRequestError):
        red.vector_stores.search(store.id, query=query, max_num_results=51)


def test_batches_run_in_the_background_and_report_failures(red):
    good = _upload(red, "good.txt", b"Apples grow on trees in the orchard.")
    noise = _upload(red, "noise.bin", bytes([0, 159, 146, 150, 0, 255, 1, 2]))
    store = red.vector_stores.create(name="batch")
    batch = red.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[good, noise])
    assert batch.object == "vector_store.files_batch" and batch.file_counts.total == 2
    batch = red.vector_stores.file_batches.poll(batch.id, vector_store_id=store.id)
    assert batch.status == "completed"
    assert (batch.file_counts.completed, batch.file_counts.failed) == (1, 1)
    failed = list(red.vector_stores.files.list(store.id, filter="failed"))
    assert [f.id for f in failed] == [noise]
    assert failed[0].last_error and failed[0].last_error.message

    red.vector_stores.files.delete(noise, vector_store_id=store.id)
    assert [f.id for f in red.vector_stores.files.list(store.id)] == [good]
    deleted = red.vector_stores.delete(store.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        red.vector_stores.retrieve(store.id)


def test_another_team_gets_404_for_the_store_its_files_and_search(red, blue):
    secret = _upload(red, "secret.txt", b"The launch code is 7431-ZETA.")
    store = red.vector_stores.create(name="private", file_ids=[secret])
    for attempt in (
        lambda: blue.vector_stores.retrieve(store.id),
        lambda: blue.vector_stores.search(store.id, query="launch code"),
        lambda: list(blue.vector_stores.files.list(store.id)),
        lambda: blue.vector_stores.files.retrieve(secret, vector_store_id=store.id),
        lambda: blue.vector_stores.delete(store.id),
        lambda: blue.files.retrieve(secret),
        lambda: blue.vector_stores.create(name="stolen", file_ids=[secret]),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert store.id not in [s.id for s in blue.vector_stores.list()]
    assert store.id in [s.id for s in red.vector_stores.list()]


def test_a_paraphrase_is_found_by_meaning(red):
    """Needs the local embedder (model "minilm", see conftest.py): the question shares no word
    with the passage it must find."""
    if "minilm" not in [m.id for m in red.models.list()]:
        pytest.skip("no embedding model: run scripts/fetch-minilm")
    store = red.vector_stores.create(name="meaning")
    for name, text in [
        ("pets.txt", "Felines doze for most of the afternoon in warm sunlight."),
        ("cars.txt", "The engine needs fresh oil every ten thousand kilometres."),
        ("money.txt", "Interest rates rose again, so mortgages got dearer."),
    ]:
        file = red.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=_upload(red, name, text.encode())
        )
        assert file.status == "completed", file.last_error
    results = list(red.vector_stores.search(store.id, query="when do cats sleep?"))
    assert results[0].filename == "pets.txt", [(r.filename, r.score) for r in results]
