"""Tenancy of teaching material: knowledge bases and avatars belong to a teacher. A teacher's
tutor may use only their own or shared material (REST and the Teacher tab alike), the Teacher
tab shows and touches only a teacher's own (an admin's, everyone's), and the web backend's API
key keeps full access."""

from __future__ import annotations

import time
from typing import Any

import gradio as gr
import httpx
import pytest

from app.ui.avatars import AvatarPanel
from app.ui.knowledge import KnowledgePanel
from tests.kit.live import LiveServer

NOTES = b"# Cells\nThe mitochondrion is the powerhouse of the cell. It produces ATP.\n"


def _teacher(api: httpx.Client, name: str, admin: bool = False) -> dict[str, Any]:
    created = api.post("/v1/teachers", json={"username": name, "password": "a long password", "is_admin": admin})
    assert created.status_code == 201, created.text
    return {**created.json(), "is_admin": admin}


def _avatar(api: httpx.Client, avatar_id: str, owner_id: int | None) -> None:
    form = {"avatar_id": avatar_id, **({"owner_id": str(owner_id)} if owner_id is not None else {})}
    response = api.post("/v1/avatars/upload", data=form, files={"file": ("clip.mp4", b"not really a video")})
    assert response.status_code == 202, response.text
    assert response.json()["owner_id"] == owner_id


@pytest.fixture
def school(api: httpx.Client) -> dict[str, Any]:
    wang, li = _teacher(api, "wang"), _teacher(api, "lee")
    kbs = {
        "wang": api.post("/v1/kbs", json={"name": "Wang's", "id": "kb-wang", "owner_id": wang["id"]}).json(),
        "shared": api.post("/v1/kbs", json={"name": "School", "id": "kb-school"}).json(),
    }
    _avatar(api, "wang-face", wang["id"])
    return {"wang": wang, "li": li, "kbs": kbs}


def test_material_is_listed_by_owner(api: httpx.Client, school: dict[str, Any]) -> None:
    wang, li = school["wang"], school["li"]
    assert school["kbs"]["wang"]["owner_id"] == wang["id"] and school["kbs"]["shared"]["owner_id"] is None
    assert [k["id"] for k in api.get("/v1/kbs", params={"owner_id": wang["id"]}).json()] == ["kb-wang"]
    assert api.get("/v1/kbs", params={"owner_id": li["id"]}).json() == []
    assert {k["id"] for k in api.get("/v1/kbs").json()} == {"kb-wang", "kb-school"}  # the API key sees all
    assert [a["avatar_id"] for a in api.get("/v1/avatars", params={"owner_id": wang["id"]}).json()["avatars"]] == [
        "wang-face"
    ]
    assert api.post("/v1/kbs", json={"name": "x", "owner_id": 999}).status_code == 422  # no such teacher


def test_a_teachers_tutor_uses_only_their_own_or_shared_material(api: httpx.Client, school: dict[str, Any]) -> None:
    wang, li = school["wang"], school["li"]

    def tutor(**fields: Any) -> httpx.Response:
        return api.post("/v1/tutors", json={"name": "T", **fields})

    refused = tutor(owner_id=li["id"], kb_ids=["kb-wang"])
    assert refused.status_code == 422 and "kb-wang belongs to another teacher" in refused.json()["detail"]
    refused = tutor(owner_id=li["id"], avatar_id="wang-face")
    assert refused.status_code == 422 and "wang-face belongs to another teacher" in refused.json()["detail"]
    lis = tutor(owner_id=li["id"], kb_ids=["kb-school", "kb-later"])  # shared, or not made yet
    assert lis.status_code == 201, lis.text
    assert api.patch(f"/v1/tutors/{lis.json()['id']}", json={"kb_ids": ["kb-wang"]}).status_code == 422
    wangs = tutor(owner_id=wang["id"], kb_ids=["kb-wang"], avatar_id="wang-face")
    assert wangs.status_code == 201, wangs.text
    # Handing Wang's tutor to Li would hand Li Wang's material with it.
    assert api.patch(f"/v1/tutors/{wangs.json()['id']}", json={"owner_id": li["id"]}).status_code == 422
    assert tutor(kb_ids=["kb-wang"], avatar_id="wang-face").status_code == 201  # the backend's own tutor
    admin = _teacher(api, "head", admin=True)
    assert tutor(owner_id=admin["id"], kb_ids=["kb-wang"]).status_code == 201

    # A teacher who leaves leaves their material to the school.
    assert api.delete(f"/v1/teachers/{wang['id']}").status_code == 204
    assert api.get("/v1/kbs/kb-wang").json()["owner_id"] is None
    assert tutor(owner_id=li["id"], kb_ids=["kb-wang"]).status_code == 201


async def test_the_teacher_tab_shows_and_touches_only_a_teachers_own(server: LiveServer, school) -> None:
    assert server.services is not None
    knowledge, avatars = KnowledgePanel(server.services), AvatarPanel(server.services)
    wang, li = school["wang"], school["li"]
    with server.client() as api:
        admin = _teacher(api, "head", admin=True)
        document = api.post("/v1/kbs/kb-wang/documents", files={"file": ("cells.md", NOTES)}).json()
        for _ in range(300):
            if api.get(f"/v1/kbs/kb-wang/documents/{document['id']}").json()["status"] == "ready":
                break
            time.sleep(0.1)

    assert [kb_id for _, kb_id in knowledge.kb_choices(li)] == []
    assert [kb_id for _, kb_id in knowledge.kb_choices(wang)] == ["kb-wang"]
    assert {kb_id for _, kb_id in knowledge.kb_choices(admin)} == {"kb-wang", "kb-school"}
    assert avatars.avatar_rows(li) == [] and [r[0] for r in avatars.avatar_rows(wang)] == ["wang-face"]

    # Li's page cannot reach Wang's material, even by sending its id.
    for attempt in (
        knowledge.show_kb(li, "kb-wang"),
        knowledge.try_question(li, "kb-wang", "What produces ATP?"),
        knowledge.delete_document(li, "kb-wang", "any-document"),
        knowledge.try_question(li, "kb-school", "What produces ATP?"),  # shared material is the admins' to manage
        avatars.delete_avatar(li, "wang-face"),
    ):
        with pytest.raises(gr.Error, match="is not yours"):
            await attempt
    assert "powerhouse" in await knowledge.try_question(wang, "kb-wang", "What produces ATP?")
    assert "powerhouse" in await knowledge.try_question(admin, "kb-wang", "What produces ATP?")

    notice, _ = await knowledge.create_kb(li, "Li's notes")
    (mine,) = server.services.kbs.list(li["id"])
    assert mine.name == "Li's notes" and mine.id in notice
