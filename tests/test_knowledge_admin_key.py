"""Who may write the knowledge base (issue 25, item 9): with LEA_ADMIN_API_KEY set, only its keys
write the documents and thesaurus that go into every user's prompt; an integration key
(AGENT_API_KEY) reads them, and its writes are 403s in the contract's shape that change nothing.
The admin key works wherever an integration key does (the console sends one key for all). A
browser's preflight allows PUT (the thesaurus) as it does DELETE. (An example key from the
documentation stopping the server: tests/test_auth.py.)"""

from __future__ import annotations

import pytest

from tests.server import API_KEY, CHAT_PATH
from tests.test_knowledge_api import DOCUMENTS, SEARCH, THESAURUS, assert_contract_error

ADMIN_KEY = "admin-key-5e0b7c91d3a4"
DOCUMENT = ("manuel-agence.md", b"# Gardes\n\nLa garde du week-end est assuree par l'agence de Lyon.")


@pytest.mark.slow
def test_with_an_admin_key_only_it_writes_the_knowledge_base(make_server):
    lea = make_server({"LEA_ADMIN_API_KEY": f"{ADMIN_KEY}, next-{ADMIN_KEY}", "LEA_LLM_MAX_REPLY_TOKENS": "8"})
    with lea.client(headers={"X-API-Key": ADMIN_KEY}) as admin, lea.client(headers={"X-API-Key": API_KEY}) as agent:
        added = admin.post(DOCUMENTS, files={"file": DOCUMENT})
        assert added.status_code == 201, added.text
        document_id = added.json()["document"]["id"]
        rules = admin.put(THESAURUS, json={"text": "caucus => réunion"})
        assert rules.status_code == 200, rules.text

        # The integration key reads…
        assert [d["id"] for d in agent.get(DOCUMENTS).json()["documents"]] == [document_id]
        assert agent.get(THESAURUS).json()["text"] == "caucus => réunion"
        assert agent.get(SEARCH, params={"q": "garde"}).status_code == 200
        # …and may not write, by either header.
        bearer = {"X-API-Key": "", "Authorization": f"Bearer {API_KEY}"}
        for headers in ({}, bearer):
            for r in (
                agent.post(DOCUMENTS, files={"file": ("autre.md", b"# Autre\n\nTexte.")}, headers=headers),
                agent.put(THESAURUS, json={"text": "x => y"}, headers=headers),
                agent.delete(f"{DOCUMENTS}/{document_id}", headers=headers),
            ):
                body = assert_contract_error(r, 403)
                assert "LEA_ADMIN_API_KEY" in body["error"] and API_KEY not in body["error"]
        assert [d["id"] for d in agent.get(DOCUMENTS).json()["documents"]] == [document_id]
        assert agent.get(THESAURUS).json()["text"] == "caucus => réunion"
        # A wrong key is still a 401, not a 403.
        assert_contract_error(agent.put(THESAURUS, json={"text": "x"}, headers={"X-API-Key": "wrong-key"}), 401)

        # The rotated admin key writes too; the admin key does what an integration key does.
        removed = admin.delete(f"{DOCUMENTS}/{document_id}", headers={"X-API-Key": f"next-{ADMIN_KEY}"})
        assert removed.status_code == 200, removed.text
        assert admin.post(CHAT_PATH, json={"message": "Bonjour"}).status_code == 200
    assert ADMIN_KEY not in lea.log_text()


@pytest.mark.slow
def test_without_an_admin_key_the_integration_key_writes_as_before(make_server):
    lea = make_server({"LEA_LLM_MAX_REPLY_TOKENS": "8"})
    with lea.client(headers={"X-API-Key": API_KEY}) as agent:
        added = agent.post(DOCUMENTS, files={"file": DOCUMENT})
        assert added.status_code == 201, added.text
        assert agent.put(THESAURUS, json={"text": "caucus => réunion"}).status_code == 200
        assert agent.delete(f"{DOCUMENTS}/{added.json()['document']['id']}").status_code == 200


@pytest.mark.slow
def test_a_preflight_allows_the_knowledge_apis_methods(make_server):
    origin = "https://app.immoassist.fr"
    lea = make_server({"LEA_CORS_ORIGINS": origin})
    with lea.client() as client:
        for path, method in ((THESAURUS, "PUT"), (f"{DOCUMENTS}/1", "DELETE"), (DOCUMENTS, "POST")):
            r = client.options(
                path,
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "x-api-key, content-type",
                },
            )
            assert r.status_code == 204, (path, method, r.status_code, r.text)
            assert r.headers["access-control-allow-origin"] == origin
            assert method in r.headers["access-control-allow-methods"]
