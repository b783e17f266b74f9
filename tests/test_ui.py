"""The Gradio UI in real headless Chromium: students chat (and come back after a reload),
teachers log in, build tutors and read transcripts."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from app.speech.audio import wav_bytes
from tests.kit.browser import open_ui
from tests.kit.live import LiveServer, new_session, new_tutor

KEY = "management-key-123"


@pytest.fixture
def ui_server(start_server) -> LiveServer:
    server = start_server(with_ui=True, management_api_key=KEY)
    server.services.teachers.create("wang", "teacher password")
    server.services.teachers.create("liu_li", "another password")
    return server


def _ask(page: Page, text: str, send: str = "click") -> None:
    """Types a question and sends it: `send` "click"s the button or presses "Enter"."""
    page.locator("#question textarea").fill(text)
    if send == "Enter":
        page.locator("#question textarea").press("Enter")
    else:
        page.locator("#send").click()


def test_student_chats_and_a_reload_keeps_the_conversation(browser: Browser, ui_server: LiveServer) -> None:
    with ui_server.client(KEY) as api:
        new_tutor(api, "Ada", subject="Math", greeting="Hello, I am Ada!")
    page = open_ui(browser.new_page(), ui_server)
    expect(page.locator("#engine-status")).to_contain_text("scripted")
    chat = page.locator("#chat")
    expect(chat).to_contain_text("Hello, I am Ada!", timeout=10_000)
    _ask(page, "What is a fraction?")
    expect(chat).to_contain_text("[Ada|0] What is a fraction?", timeout=15_000)
    _ask(page, "And a decimal?", send="Enter")
    expect(chat).to_contain_text("[Ada|1] And a decimal?", timeout=15_000)

    page.reload(wait_until="load")
    expect(page.locator("#chat")).to_contain_text("[Ada|1] And a decimal?", timeout=15_000)
    _ask(page, "Third?")
    expect(page.locator("#chat")).to_contain_text("[Ada|2] Third?", timeout=15_000)
    assert ui_server.services.sessions.count_active() == 1  # one session, continued
    page.close()


def test_a_student_types_the_next_question_while_the_answer_streams(
    browser: Browser, start_server, scripted_engine
) -> None:
    """What the student types meanwhile stays in the box, and sending an empty box changes
    nothing (it once emptied the whole conversation)."""
    scripted_engine.delay = 1.0  # three pieces: the answer streams for about three seconds
    server = start_server(with_ui=True, management_api_key=KEY)
    with server.client(KEY) as api:
        new_tutor(api, "Ada", subject="Math")
    page = open_ui(browser.new_page(), server)
    chat, box = page.locator("#chat"), page.locator("#question textarea")
    _ask(page, "What is a fraction?")
    expect(chat).to_contain_text("[Ada|0]", timeout=15_000)  # its first piece
    box.fill("And a decimal?")
    expect(chat).to_contain_text("[Ada|0] What is a fraction?", timeout=15_000)
    expect(box).to_have_value("And a decimal?")
    # Sending an empty box: nothing happens, whenever it lands (Gradio ignores a send while the
    # answer's run is still closing, so the waits let it run).
    page.wait_for_timeout(1_000)
    box.fill("")
    box.press("Enter")
    page.wait_for_timeout(1_000)
    expect(chat).to_contain_text("[Ada|0] What is a fraction?")
    _ask(page, "And a decimal?", send="Enter")
    expect(chat).to_contain_text("] And a decimal?", timeout=15_000)
    expect(chat).to_contain_text("[Ada|0] What is a fraction?")
    expect(chat).not_to_contain_text("Error")  # no run failed (an empty one once did, in Gradio)
    page.close()


def test_student_arrives_with_a_session_from_the_web_backend(browser: Browser, ui_server: LiveServer) -> None:
    with ui_server.client(KEY) as api:
        new_tutor(api, "Ada")
        bob = new_tutor(api, "Bob", greeting="Bob here.")
        session = new_session(api, bob["id"], student_id=77)
    page = open_ui(browser.new_page(), ui_server, f"?session={session['session_id']}&token={session['engine_token']}")
    expect(page.locator("#tutor-header")).to_contain_text("Bob", timeout=10_000)
    _ask(page, "hi from the course page")
    expect(page.locator("#chat")).to_contain_text("[Bob|0] hi from the course page", timeout=15_000)
    expect(page.locator("#send")).to_have_text("Send")
    with ui_server.client(KEY) as api:
        transcript = api.get(f"/v1/sessions/{session['session_id']}/messages").json()
    assert [m["content"] for m in transcript] == ["hi from the course page", "[Bob|0] hi from the course page"]
    # A forged token gets an ordinary page, not that session.
    forged = open_ui(browser.new_page(), ui_server, f"?session={session['session_id']}&token=forged")
    expect(forged.locator("#tutor-header")).to_contain_text("Ada", timeout=10_000)
    page.close()
    forged.close()


def _upload(page: Page, field: str, path: Path) -> None:
    """Chooses a file in a Gradio file field and waits until the browser has uploaded it.

    Gradio refuses a click while the upload runs ("Waiting for file(s) to finish uploading"), and
    the file's name shows during the upload too: only the download link of the stored copy says
    it is done (CI twice pressed a button too early and waited 60 s for a notice that never came).
    """
    page.locator(f"{field} input[type=file]").set_input_files(str(path))
    expect(page.locator(f"{field} a[href*='/file=']")).to_be_attached(timeout=30_000)


def _login(page: Page, user: str, password: str) -> None:
    page.get_by_role("tab", name="Teacher").click()
    page.locator("#login-user textarea").fill(user)
    page.locator("#login-password input").fill(password)
    page.locator("#login").click()


def test_a_chinese_tutors_students_read_the_student_tab_in_chinese(browser: Browser, ui_server: LiveServer) -> None:
    with ui_server.client(KEY) as api:
        new_tutor(api, "Ada", greeting="Hello, I am Ada!")
        li = new_tutor(api, "李老师", language="zh", greeting="同学们好！")
        session = new_session(api, li["id"])
    page = open_ui(browser.new_page(), ui_server, f"?session={session['session_id']}&token={session['engine_token']}")
    expect(page.locator("#chat")).to_contain_text("同学们好！", timeout=10_000)
    expect(page.locator("#send")).to_have_text("发送")
    expect(page.locator("#question textarea")).to_have_attribute("placeholder", "向老师提问…")
    _ask(page, "什么是比喻？")
    expect(page.locator("#chat")).to_contain_text("[李老师|0] 什么是比喻？", timeout=15_000)
    # Another student picks the English tutor, then the Chinese one: the words follow the tutor.
    other = open_ui(browser.new_page(), ui_server)
    expect(other.locator("#chat")).to_contain_text("Hello, I am Ada!", timeout=10_000)
    expect(other.locator("#send")).to_have_text("Send")
    other.locator("#tutor-pick input").click()
    other.get_by_role("option").filter(has_text="李老师").click()
    expect(other.locator("#send")).to_have_text("发送", timeout=10_000)
    expect(other.locator("#chat")).to_contain_text("同学们好！")
    page.close()
    other.close()


def test_teacher_logs_in_builds_a_tutor_and_reads_its_transcripts(browser: Browser, ui_server: LiveServer) -> None:
    page = open_ui(browser.new_page(), ui_server)
    _login(page, "wang", "wrong password")
    expect(page.get_by_text("Wrong username or password.").first).to_be_visible(timeout=10_000)
    expect(page.locator("#tutor-name")).to_be_hidden()

    _login(page, "wang", "teacher password")
    expect(page.locator("#signed-in")).to_contain_text("wang", timeout=10_000)
    page.locator("#tutor-name textarea").fill("Wang Laoshi")
    page.locator("#tutor-subject textarea").fill("语文")
    page.locator("#tutor-greeting textarea").fill("同学们好！")
    page.locator("#tutor-kbs textarea").fill("kb-001, kb-002")
    page.locator("#save-tutor").click()
    expect(page.locator("#teacher-notice")).to_contain_text("Created tutor Wang Laoshi", timeout=10_000)
    (tutor,) = ui_server.services.tutors.list()
    assert tutor.subject == "语文" and tutor.owner_id == ui_server.services.teachers.find("wang").id
    assert tutor.kb_ids == ["kb-001", "kb-002"]
    # Editing keeps what was not touched (once the saved tutor is loaded back into the editor).
    expect(page.locator("#usage")).to_contain_text("questions: 0", timeout=10_000)
    page.locator("#tutor-persona textarea").fill("你是一位耐心的语文老师。")
    page.locator("#save-tutor").click()
    expect(page.locator("#teacher-notice")).to_contain_text("Saved tutor Wang Laoshi", timeout=10_000)
    (tutor,) = ui_server.services.tutors.list()
    assert tutor.persona == "你是一位耐心的语文老师。" and tutor.kb_ids == ["kb-001", "kb-002"]

    # A student talks to it; the teacher reads the transcript and the usage figures.
    with ui_server.client(KEY) as api:
        session = new_session(api, tutor.id, student_id=5)
    student = open_ui(
        browser.new_page(), ui_server, f"?session={session['session_id']}&token={session['engine_token']}"
    )
    expect(student.locator("#chat")).to_contain_text("同学们好！", timeout=10_000)
    _ask(student, "什么是比喻？")
    expect(student.locator("#chat")).to_contain_text("[Wang Laoshi|0] 什么是比喻？", timeout=15_000)
    student.close()

    expect(page.locator("#usage")).to_contain_text("questions: 0", timeout=10_000)
    page.locator("#refresh").click()
    expect(page.locator("#usage")).to_contain_text("questions: 1", timeout=10_000)
    page.locator("#session-pick input").click()
    page.get_by_role("option").filter(has_text="student 5").click()
    expect(page.locator("#transcript")).to_contain_text("[Wang Laoshi|0] 什么是比喻？", timeout=10_000)

    # Deleting is refused while a student's session is live, then clears the editor.
    page.locator("#delete-tutor").click()
    expect(page.get_by_text("active session").first).to_be_visible(timeout=10_000)
    with ui_server.client(KEY) as api:
        api.delete(f"/v1/sessions/{session['session_id']}")
    page.locator("#delete-tutor").click()
    expect(page.locator("#teacher-notice")).to_contain_text("Deleted tutor Wang Laoshi", timeout=10_000)
    expect(page.locator("#tutor-name textarea")).to_have_value("")
    assert ui_server.services.tutors.list() == []

    # The key and the password are nowhere in the public config.
    with ui_server.client() as anonymous:
        config = anonymous.get(f"{ui_server.settings.ui_path}/config").text
    assert KEY not in config and "teacher password" not in config
    page.close()


def test_a_teacher_sees_only_their_own_tutors(browser: Browser, ui_server: LiveServer) -> None:
    teachers, tutors = ui_server.services.teachers, ui_server.services.tutors
    tutors.create({"name": "Wang's tutor", "owner_id": teachers.find("wang").id})
    tutors.create({"name": "Li's tutor", "owner_id": teachers.find("liu_li").id})
    page = open_ui(browser.new_page(), ui_server)
    _login(page, "liu_li", "another password")
    expect(page.locator("#signed-in")).to_contain_text("liu_li", timeout=10_000)
    page.locator("#my-tutors input").click()
    expect(page.get_by_role("option", name="Li's tutor")).to_have_count(1, timeout=10_000)
    expect(page.get_by_role("option", name="Wang's tutor")).to_have_count(0)
    page.close()


def test_teacher_indexes_course_material_and_students_see_sources(
    browser: Browser, ui_server: LiveServer, tmp_path
) -> None:
    notes = tmp_path / "cells.md"
    notes.write_text("# Cells\nThe mitochondrion is the powerhouse of the cell. It produces ATP.\n")
    page = open_ui(browser.new_page(), ui_server)
    _login(page, "wang", "teacher password")
    page.locator("#kb-name textarea").fill("Biology")
    page.locator("#kb-create").click()
    expect(page.locator("#kb-notice")).to_contain_text("Created knowledge base Biology", timeout=10_000)
    _upload(page, "#kb-file", notes)
    page.locator("#kb-upload").click()
    expect(page.locator("#kb-notice")).to_contain_text("Indexed cells.md", timeout=60_000)
    expect(page.locator("#kb-docs")).to_contain_text("ready")
    page.locator("#kb-query textarea").fill("What produces ATP?")
    page.locator("#kb-query textarea").press("Enter")
    expect(page.locator("#kb-results")).to_contain_text("cells.md", timeout=15_000)

    (kb,) = ui_server.services.kbs.list()
    with ui_server.client(KEY) as api:
        tutor = new_tutor(api, "Ada", kb_ids=[kb.id])
        session = new_session(api, tutor["id"])
    student = open_ui(
        browser.new_page(), ui_server, f"?session={session['session_id']}&token={session['engine_token']}"
    )
    _ask(student, "What produces ATP?")
    expect(student.locator("#chat")).to_contain_text("Sources: [1] cells.md, Cells", timeout=15_000)
    page.close()
    student.close()


def test_student_asks_aloud_and_hears_the_answer(tmp_path, start_server, launch) -> None:
    """Chromium's fake microphone plays a WAV of the question; the chat shows what was heard and
    the answer, and the tutor's voice streams into the page."""
    from tests.kit.speech import say, with_silence

    wav = tmp_path / "question.wav"
    wav.write_bytes(wav_bytes(with_silence(say("What is the capital of France?", rate=48_000), 0.3, 3.0)))
    server = start_server(with_ui=True, enable_asr=True, enable_tts=True, tts_engine="offline")
    with server.client() as api:
        new_tutor(api, "Ada", subject="Geography")
    browser = launch(
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    )
    page = open_ui(browser.new_page(), server)
    expect(page.locator("#engine-status")).to_contain_text("whisper-tiny.en", timeout=20_000)
    page.locator("#mic button.record-button").click()
    page.wait_for_timeout(2_800)
    page.locator("#mic button.stop-button").click()
    chat = page.locator("#chat")
    expect(chat).to_contain_text("🎤 What is the capital of France?", timeout=30_000)
    expect(chat).to_contain_text("[Ada|0] What is the capital of France?", timeout=30_000)
    # The streamed answer really plays: the player advances through decoded audio.
    page.wait_for_function(
        "() => { const a = document.querySelector('#voice audio'); return a && a.currentTime > 0.5; }",
        timeout=30_000,
    )


def test_teacher_prepares_an_avatar_and_students_see_it_speak(browser: Browser, start_server, tmp_path) -> None:
    from tests.kit.media import portrait_video

    server = start_server(with_ui=True, enable_avatar=True, enable_tts=True, tts_engine="piper")
    server.services.teachers.create("wang", "teacher password")
    video = portrait_video(tmp_path / "me.mp4", seconds=2.0, size=(480, 360))
    page = open_ui(browser.new_page(), server)
    _login(page, "wang", "teacher password")
    page.locator("#avatar-id textarea").fill("wang-face")
    _upload(page, "#avatar-file", video)
    page.locator("#avatar-make").click()
    expect(page.locator("#avatar-notice")).to_contain_text("Avatar wang-face is ready", timeout=60_000)
    expect(page.locator("#avatar-list")).to_contain_text("ready")
    with server.client() as api:
        new_tutor(api, "Ada", avatar_id="wang-face")

    student = open_ui(browser.new_page(), server)
    playing = "(id) => { const v = document.querySelector(id + ' video'); return v && v.currentTime > 0.5; }"
    student.wait_for_function(playing, arg="#avatar-idle", timeout=20_000)  # the idle loop, listening
    _ask(student, "Say hello to the class, please.")
    expect(student.locator("#chat")).to_contain_text("[Ada|0] Say hello", timeout=30_000)
    student.wait_for_function(playing, arg="#avatar-talk", timeout=30_000)  # and speaking
