"""Virtual keys made over the admin API, used by the official `openai` Python SDK: the secret
works as the SDK's `api_key`, and once revoked the SDK raises `AuthenticationError`.
"""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI


def test_a_virtual_key_works_with_the_sdk_until_revoked(gateway):
    status, created = gateway.admin_status("POST", "/admin/keys", {"name": "python-sdk", "models": ["gpt"]})
    assert status == 201
    secret = created["key"]
    assert secret.startswith("sk-px-")

    client = OpenAI(base_url=gateway.base_url, api_key=secret, max_retries=0)
    completion = client.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "hello from a virtual key"}]
    )
    assert completion.choices[0].message.content == "hello from a virtual key"

    # The key may use only `gpt`.
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 403

    status, _ = gateway.admin_status("DELETE", f"/admin/keys/{created['id']}")
    assert status == 200
    with pytest.raises(openai.AuthenticationError) as rejected:
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
    assert rejected.value.status_code == 401
    assert rejected.value.code == "invalid_api_key"
    # Listing models is refused too.
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
